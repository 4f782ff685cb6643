//! `LogLimiter`: keeps a hostile client from flooding the log.
//!
//! Any warning that a client can trigger at will (sending too much, say)
//! goes through a limiter: a few lines per window, then silence, then one
//! line saying how many were suppressed.

use std::time::{Duration, Instant};

use log::warn;

/// Allows `burst` lines per `window`.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(burst: u32, window: Duration) -> Self {
        LogLimiter {
            window,
            burst,
            window_start: None,
            allowed: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`. Reports the lines suppressed
    /// in the previous window when a new one starts.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            if self.suppressed > 0 {
                warn!("{} similar warnings suppressed", self.suppressed);
            }
            self.window_start = Some(now);
            self.allowed = 0;
            self.suppressed = 0;
        }
        if self.allowed < self.burst {
            self.allowed += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_per_window_then_suppresses() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(3, Duration::from_secs(10));
        let allowed = (0..100).filter(|_| limiter.allow(start)).count();
        assert_eq!(allowed, 3);
        assert_eq!(limiter.suppressed, 97);
        assert!(limiter.allow(start + Duration::from_secs(10)));
        assert_eq!(limiter.suppressed, 0);
    }
}
