//! What a run counts: finished connections, errors by kind, and a latency
//! histogram.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::bench::slot::{ErrorKind, Outcome};

/// Latencies are recorded in nanoseconds, with 3 significant digits, up to
/// an hour (far beyond any `--timeout` that makes sense).
const LATENCY_HIGHEST_NS: u64 = 3_600_000_000_000;

/// Counters and the latency histogram of the measured part of a run.
#[derive(Debug)]
pub struct Tally {
    /// Connections that got the exact reply and its end of stream.
    pub completed: u64,
    /// Failures, indexed like `ErrorKind::ALL`.
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Start-to-end-of-stream time of completed connections, in ns.
    pub latency_ns: Histogram<u64>,
}

impl Tally {
    /// An empty tally. The histogram is allocated here, once per run.
    pub fn new() -> Result<Tally, String> {
        // Only fails for bounds that make no sense, which these are not.
        let latency_ns = Histogram::new_with_bounds(1, LATENCY_HIGHEST_NS, 3)
            .map_err(|e| format!("cannot create the latency histogram: {e}"))?;
        Ok(Tally {
            completed: 0,
            errors: [0; ErrorKind::ALL.len()],
            latency_ns,
        })
    }

    /// Counts one finished connection that took `latency`.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Completed => {
                self.completed += 1;
                let nanoseconds = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.latency_ns.saturating_record(nanoseconds.max(1));
            }
            Outcome::Failed(kind) => self.count_error(kind),
        }
    }

    /// Counts one failure.
    pub fn count_error(&mut self, kind: ErrorKind) {
        if let Some(index) = ErrorKind::ALL.iter().position(|&each| each == kind) {
            self.errors[index] += 1;
        }
    }

    /// All failures.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_go_into_the_histogram_and_failures_into_their_kind() {
        let mut tally = Tally::new().unwrap();
        tally.record(Outcome::Completed, Duration::from_micros(20));
        tally.record(Outcome::Failed(ErrorKind::Timeout), Duration::from_secs(1));
        tally.record(Outcome::Failed(ErrorKind::Timeout), Duration::from_secs(1));
        assert_eq!(tally.completed, 1);
        assert_eq!(tally.errors, [0, 0, 0, 2, 0]);
        assert_eq!(tally.error_total(), 2);
        assert_eq!(tally.latency_ns.len(), 1);
        assert!(tally.latency_ns.max() >= 19_990 && tally.latency_ns.max() <= 20_020);
    }
}
