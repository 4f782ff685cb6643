//! Rate limits for the log lines a client can cause.
//!
//! Logging is synchronous: every line is a `write(2)` to stderr on the
//! loop's only thread. A client that can make the server log at will can
//! therefore fill the disk, drown the lines that matter, or (when stderr is a
//! pipe nobody reads) block the whole server in `write`. So every line a
//! client can cause, at the levels shown by default (info and above), goes
//! through a [`LogLimiter`]: a few lines per window, then silence, then one
//! line saying how many were suppressed.
//!
//! Each kind of line has its own limiter ([`ClientLines`]), so a flood of
//! one kind cannot hide another. The suppression report does not wait for
//! the next line of its kind: [`ClientLines::next_report`] is a deadline the
//! loop's `poll` timeout honours, and [`ClientLines::report_due`] writes the
//! reports whose window has ended.
//!
//! The clock is injected: every method takes `now`, so the tests move time
//! by hand instead of sleeping.

use std::time::{Duration, Instant};

use log::Level;

/// Lines allowed per window, per kind.
const BURST: u32 = 5;
/// The window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Allows `burst` lines per `window`, then counts the rest.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    /// What the lines say, for the report: `connection limit reached`.
    what: &'static str,
    /// The level of the lines, and so of their report.
    level: Level,
    burst: u32,
    window: Duration,
    /// When the current window began; `None` before the first line.
    window_start: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(what: &'static str, level: Level, burst: u32, window: Duration) -> Self {
        LogLimiter {
            what,
            level,
            burst,
            window,
            window_start: None,
            allowed: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`. A window that has ended is
    /// reported first, so the report always precedes the next line.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window)
        {
            self.report_if_due(now);
            self.window_start = Some(now);
            self.allowed = 0;
        }
        if self.allowed < self.burst {
            self.allowed += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// When the suppressed lines are to be reported: the end of the window
    /// they were suppressed in. `None` when nothing is pending.
    pub(crate) fn report_at(&self) -> Option<Instant> {
        match self.window_start {
            Some(start) if self.suppressed > 0 => Some(start + self.window),
            _ => None,
        }
    }

    /// Logs how many lines were suppressed, once their window has ended.
    /// Returns that number, if a report was due.
    pub(crate) fn report_if_due(&mut self, now: Instant) -> Option<u64> {
        if self.report_at()? > now {
            return None;
        }
        self.report()
    }

    /// Logs how many lines were suppressed, now (at exit, say).
    pub(crate) fn report(&mut self) -> Option<u64> {
        if self.suppressed == 0 {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        log::log!(
            self.level,
            "{suppressed} more \"{}\" lines suppressed (at most {} per {})",
            self.what,
            self.burst,
            humantime::format_duration(self.window)
        );
        Some(suppressed)
    }
}

/// One limiter per kind of line a client can cause.
#[derive(Debug)]
pub(crate) struct ClientLines {
    /// A listener was ready while the table was full (warn).
    pub(crate) connection_limit: LogLimiter,
    /// The clients that waited at the limit have all been taken in (info).
    pub(crate) backlog_drained: LogLimiter,
    /// `accept` failed; backing off (warn).
    pub(crate) accept_failed: LogLimiter,
    /// `accept` works again after failing (info).
    pub(crate) accept_recovered: LogLimiter,
    /// A connection over `max_connections_per_ip` closed at once (warn).
    pub(crate) per_ip_limit: LogLimiter,
    /// A connection closed for sending more than `max_message` (warn).
    pub(crate) oversize: LogLimiter,
    /// A connection closed for a bad or missing PROXY header, or from a
    /// peer outside `--proxy-from` (warn).
    pub(crate) proxy_error: LogLimiter,
}

impl ClientLines {
    pub(crate) fn new() -> Self {
        let limiter = |what, level| LogLimiter::new(what, level, BURST, WINDOW);
        ClientLines {
            connection_limit: limiter("connection limit reached", Level::Warn),
            backlog_drained: limiter("backlog drained", Level::Info),
            accept_failed: limiter("accept failed", Level::Warn),
            accept_recovered: limiter("accept works again", Level::Info),
            per_ip_limit: limiter("per-ip limit", Level::Warn),
            oversize: limiter("sent more than the limit", Level::Warn),
            proxy_error: limiter("PROXY header refused", Level::Warn),
        }
    }

    fn all(&mut self) -> [&mut LogLimiter; 7] {
        [
            &mut self.connection_limit,
            &mut self.backlog_drained,
            &mut self.accept_failed,
            &mut self.accept_recovered,
            &mut self.per_ip_limit,
            &mut self.oversize,
            &mut self.proxy_error,
        ]
    }

    /// The earliest pending report: `poll` must wake by then even if nothing
    /// else happens, or the report would wait for the next line of its kind.
    pub(crate) fn next_report(&self) -> Option<Instant> {
        [
            &self.connection_limit,
            &self.backlog_drained,
            &self.accept_failed,
            &self.accept_recovered,
            &self.per_ip_limit,
            &self.oversize,
            &self.proxy_error,
        ]
        .into_iter()
        .filter_map(LogLimiter::report_at)
        .min()
    }

    /// Writes every report whose window has ended.
    pub(crate) fn report_due(&mut self, now: Instant) {
        for limiter in self.all() {
            limiter.report_if_due(now);
        }
    }

    /// Writes every pending report, due or not: the server is exiting.
    pub(crate) fn report_all(&mut self) {
        for limiter in self.all() {
            limiter.report();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32) -> LogLimiter {
        LogLimiter::new("test line", Level::Warn, burst, Duration::from_secs(10))
    }

    #[test]
    fn allows_a_burst_per_window_then_suppresses() {
        let start = Instant::now();
        let mut limiter = limiter(3);
        let allowed = (0..100).filter(|_| limiter.allow(start)).count();
        assert_eq!(allowed, 3);
        assert_eq!(limiter.suppressed, 97);
        assert!(limiter.allow(start + Duration::from_secs(10)));
        assert_eq!(limiter.suppressed, 0);
    }

    #[test]
    fn the_report_is_due_at_the_end_of_the_window_without_another_line() {
        let start = Instant::now();
        let mut limiter = limiter(1);
        assert!(limiter.allow(start));
        assert_eq!(limiter.report_at(), None, "nothing suppressed yet");
        assert!(!limiter.allow(start + Duration::from_secs(1)));
        assert!(!limiter.allow(start + Duration::from_secs(2)));
        let due = start + Duration::from_secs(10);
        assert_eq!(limiter.report_at(), Some(due));
        assert_eq!(
            limiter.report_if_due(due - Duration::from_millis(1)),
            None,
            "not yet"
        );
        assert_eq!(limiter.report_if_due(due), Some(2));
        assert_eq!(limiter.report_at(), None, "reported once");
        assert_eq!(limiter.report_if_due(due + Duration::from_secs(60)), None);
    }

    #[test]
    fn each_kind_of_line_has_its_own_budget() {
        let now = Instant::now();
        let mut lines = ClientLines::new();
        let oversize = (0..50).filter(|_| lines.oversize.allow(now)).count();
        assert_eq!(oversize as u32, BURST);
        assert!(
            lines.per_ip_limit.allow(now),
            "a flood of one kind does not silence another"
        );
        assert_eq!(lines.next_report(), Some(now + WINDOW));
        lines.report_due(now + WINDOW);
        assert_eq!(lines.next_report(), None);
    }
}
