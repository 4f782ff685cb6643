//! The result of a run, as text for people or one JSON object for scripts.
//!
//! Every JSON field name carries its unit (`latency_us_p99`,
//! `connections_per_s`); docs/benchmarks.md lists them. The object is flat
//! and holds only numbers and two short fixed strings, so it is written by
//! hand rather than through a serialization crate.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::slot::ErrorKind;
use crate::bench::tally::Tally;

/// Everything a run reports.
#[derive(Debug)]
pub struct Report<'run> {
    /// "load", or "idle" for `--idle`.
    pub mode: &'static str,
    /// "burst", "line" or "eof".
    pub framing: &'static str,
    /// Bytes per request.
    pub payload_bytes: usize,
    /// Connections in flight at most.
    pub concurrency: usize,
    /// `--rate`, if open loop.
    pub offered_rate_per_s: Option<u64>,
    /// The measured time.
    pub elapsed: Duration,
    /// Counters and latencies.
    pub tally: &'run Tally,
    /// The client's CPU time over `elapsed`.
    pub client_cpu: Option<Duration>,
    /// `--idle`: connections held open to the end.
    pub idle_connections: u64,
}

impl Report<'_> {
    fn connections_per_s(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.tally.completed as f64 / seconds
        } else {
            0.0
        }
    }

    fn client_cpu_percent(&self) -> Option<f64> {
        let seconds = self.elapsed.as_secs_f64();
        self.client_cpu
            .filter(|_| seconds > 0.0)
            .map(|cpu| 100.0 * cpu.as_secs_f64() / seconds)
    }

    /// Latency percentiles in µs, named as in JSON; zeros when nothing completed.
    fn latencies_us(&self) -> [(&'static str, f64); 6] {
        let histogram = &self.tally.latency_ns;
        let at = |percentile: f64| histogram.value_at_percentile(percentile) as f64 / 1000.0;
        [
            ("p50", at(50.0)),
            ("p90", at(90.0)),
            ("p99", at(99.0)),
            ("p99_9", at(99.9)),
            ("max", histogram.max() as f64 / 1000.0),
            ("mean", histogram.mean() / 1000.0),
        ]
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(String, String)> = vec![
            ("mode".into(), format!("\"{}\"", self.mode)),
            ("framing".into(), format!("\"{}\"", self.framing)),
            ("payload_bytes".into(), self.payload_bytes.to_string()),
            ("concurrency".into(), self.concurrency.to_string()),
            (
                "offered_rate_per_s".into(),
                self.offered_rate_per_s
                    .map_or("null".into(), |rate| rate.to_string()),
            ),
            ("elapsed_s".into(), format!("{:.6}", self.elapsed.as_secs_f64())),
            ("completed".into(), self.tally.completed.to_string()),
            ("errors".into(), self.tally.error_total().to_string()),
        ];
        for (kind, count) in ErrorKind::ALL.iter().zip(self.tally.errors) {
            fields.push((format!("errors_{}", kind.name()), count.to_string()));
        }
        fields.push((
            "connections_per_s".into(),
            format!("{:.1}", self.connections_per_s()),
        ));
        for (name, value) in self.latencies_us() {
            fields.push((format!("latency_us_{name}"), format!("{value:.1}")));
        }
        let cpu_seconds = self
            .client_cpu
            .map_or("null".into(), |cpu| format!("{:.2}", cpu.as_secs_f64()));
        fields.push(("client_cpu_s".into(), cpu_seconds));
        let cpu_percent = self
            .client_cpu_percent()
            .map_or("null".into(), |percent| format!("{percent:.1}"));
        fields.push(("client_cpu_percent".into(), cpu_percent));
        fields.push(("idle_connections".into(), self.idle_connections.to_string()));
        let body: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("\"{name}\":{value}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// A few lines for people.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let seconds = self.elapsed.as_secs_f64();
        if self.mode == "idle" {
            let _ = writeln!(
                text,
                "held {} idle connections for {seconds:.1} s",
                self.idle_connections
            );
        } else {
            let _ = writeln!(
                text,
                "{} connections completed in {seconds:.2} s: {:.0} connections/s \
                 ({} framing, {} bytes, concurrency {})",
                self.tally.completed,
                self.connections_per_s(),
                self.framing,
                self.payload_bytes,
                self.concurrency
            );
            let latencies: Vec<String> = self
                .latencies_us()
                .iter()
                .map(|(name, value)| format!("{} {value:.1}", name.replace('_', ".")))
                .collect();
            let _ = writeln!(text, "latency µs: {}", latencies.join(", "));
        }
        let errors: Vec<String> = ErrorKind::ALL
            .iter()
            .zip(self.tally.errors)
            .map(|(kind, count)| format!("{} {count}", kind.name().replace('_', " ")))
            .collect();
        let _ = writeln!(
            text,
            "errors: {} ({})",
            self.tally.error_total(),
            errors.join(", ")
        );
        match (self.client_cpu, self.client_cpu_percent()) {
            (Some(cpu), Some(percent)) => {
                let _ = writeln!(
                    text,
                    "client CPU: {:.2} s, {percent:.0}% of one core",
                    cpu.as_secs_f64()
                );
            }
            // Holding idle connections measures no CPU.
            _ if self.mode == "idle" => {}
            _ => text.push_str("client CPU: unknown (no /proc)\n"),
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::slot::Outcome;

    #[test]
    fn json_is_one_flat_object_with_units_in_the_names() {
        let mut tally = Tally::new().unwrap();
        tally.record(Outcome::Completed, Duration::from_micros(100));
        tally.record(Outcome::Failed(ErrorKind::WrongReply), Duration::ZERO);
        let report = Report {
            mode: "load",
            framing: "burst",
            payload_bytes: 13,
            concurrency: 2,
            offered_rate_per_s: None,
            elapsed: Duration::from_secs(2),
            tally: &tally,
            client_cpu: Some(Duration::from_secs(1)),
            idle_connections: 0,
        };
        let json = report.to_json();
        assert!(json.starts_with("{\"mode\":\"load\","), "{json}");
        assert!(json.contains("\"completed\":1,\"errors\":1,"), "{json}");
        assert!(json.contains("\"errors_wrong_reply\":1,"), "{json}");
        assert!(json.contains("\"connections_per_s\":0.5,"), "{json}");
        assert!(json.contains("\"latency_us_max\":100.0"), "{json}");
        assert!(json.contains("\"client_cpu_percent\":50.0"), "{json}");
        assert!(json.contains("\"offered_rate_per_s\":null"), "{json}");
        assert!(report.to_text().contains("wrong reply 1"));
    }
}
