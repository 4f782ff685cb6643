//! Counters: what the server has done, readable from any thread while it runs.
//!
//! The loop is single-threaded, but tests and embedders read the counters
//! from other threads, so each one is an atomic. `Relaxed` is enough: each
//! counter is independent, and nobody infers one counter from another.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::connection::CloseReason;

/// Live counters of one server. Get them with [`Server::stats`](crate::Server::stats).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    turns_yielded: AtomicU64,
    closed_completed: AtomicU64,
    replies_completed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    partial_writes: AtomicU64,
    bytes_discarded: AtomicU64,
    accept_backoffs: AtomicU64,
    per_ip_limit: AtomicU64,
    poll_wakeups: AtomicU64,
    closed_oversize: AtomicU64,
    closed_idle_timeout: AtomicU64,
    closed_read_timeout: AtomicU64,
    closed_reset: AtomicU64,
    closed_io_error: AtomicU64,
    closed_linger_timeout: AtomicU64,
    closed_shutdown_cut_off: AtomicU64,
    closed_proxy_error: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open right now: accepted and not yet closed. Zero once
    /// a server has finished.
    pub open: u64,
    /// Connections accepted. Once none is open, this is the sum of the
    /// `closed_*` counters: every connection ends in exactly one counted way.
    pub accepted: u64,
    /// Replies written in full. Not a way to end: a connection whose reply
    /// was written in full then ends as `closed_completed`, or as a linger
    /// timeout, a reset or an I/O error when the client misbehaved after it.
    pub replies_completed: u64,
    /// Bytes read from clients, including bytes discarded while lingering.
    pub bytes_in: u64,
    /// Reply bytes written to clients.
    pub bytes_out: u64,
    /// `write` calls that took fewer bytes than offered: the kernel's send
    /// buffer was full, and the rest waited for the next writable event.
    pub partial_writes: u64,
    /// Bytes read after a reply (or a refusal) and thrown away.
    pub bytes_discarded: u64,
    /// Times `accept` was put off because the process was out of file
    /// descriptors (EMFILE/ENFILE): one per retry period, not one per client.
    pub accept_backoffs: u64,
    /// Connections accepted and closed at once, without a reply, because
    /// their address already held `max_connections_per_ip`. Also counted in
    /// `accepted`. With `--proxy-protocol` the address is the client's from
    /// the PROXY header, and the close comes once the header has arrived.
    pub per_ip_limit: u64,
    /// Times `poll` returned: the loop's heartbeat. An idle server wakes
    /// only for deadlines, so a count that races ahead while nothing
    /// happens means the loop is spinning. Not in the summary line: it
    /// depends on timing (two events may arrive in one wakeup or in two).
    pub poll_wakeups: u64,
    /// Turns that ended because a connection used up its budget of bytes or
    /// calls while its socket was still ready. Not in the summary line:
    /// it depends on timing.
    pub turns_yielded: u64,
    /// Connections whose reply was written in full and whose client then
    /// closed (or lingering was off): the normal end.
    pub closed_completed: u64,
    /// Connections closed for sending more than `max_message`.
    pub closed_oversize: u64,
    /// Connections closed after `idle_timeout` without progress.
    pub closed_idle_timeout: u64,
    /// Connections closed because the message had not arrived within `read_timeout`.
    pub closed_read_timeout: u64,
    /// Connections the client reset (ECONNRESET, EPIPE, ECONNABORTED).
    pub closed_reset: u64,
    /// Connections closed on any other I/O error.
    pub closed_io_error: u64,
    /// Connections whose client had not closed when `linger` ran out.
    pub closed_linger_timeout: u64,
    /// Connections still open when the shutdown grace period ended.
    pub closed_shutdown_cut_off: u64,
    /// With `--proxy-protocol`: connections closed without a reply because
    /// their PROXY header was malformed or missing, or their peer was not
    /// in `--proxy-from`.
    pub closed_proxy_error: u64,
}

impl Stats {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }
    pub(crate) fn reply_completed(&self) {
        self.replies_completed.fetch_add(1, Relaxed);
    }
    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn partial_write(&self) {
        self.partial_writes.fetch_add(1, Relaxed);
    }
    pub(crate) fn bytes_discarded(&self, n: usize) {
        self.bytes_discarded.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn accept_backoff(&self) {
        self.accept_backoffs.fetch_add(1, Relaxed);
    }
    pub(crate) fn per_ip_refused(&self) {
        self.per_ip_limit.fetch_add(1, Relaxed);
    }
    pub(crate) fn poll_wakeup(&self) {
        self.poll_wakeups.fetch_add(1, Relaxed);
    }
    pub(crate) fn turn_yielded(&self) {
        self.turns_yielded.fetch_add(1, Relaxed);
    }

    /// Counts one connection's end.
    pub(crate) fn closed(&self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Completed => &self.closed_completed,
            CloseReason::Oversize => &self.closed_oversize,
            CloseReason::IdleTimeout => &self.closed_idle_timeout,
            CloseReason::ReadTimeout => &self.closed_read_timeout,
            CloseReason::Reset => &self.closed_reset,
            CloseReason::IoError => &self.closed_io_error,
            CloseReason::LingerTimeout => &self.closed_linger_timeout,
            CloseReason::ShutdownCutOff => &self.closed_shutdown_cut_off,
            CloseReason::ProxyError(_) => &self.closed_proxy_error,
            CloseReason::PerIpLimit => &self.per_ip_limit,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Connections open right now: accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.snapshot().open
    }

    /// Reads every counter. The counters are read one by one while the
    /// loop may be counting, so a snapshot taken while connections come
    /// and go can be off by the few that moved meanwhile; `open` errs
    /// towards too many, never below zero.
    pub fn snapshot(&self) -> StatsSnapshot {
        // The closes first, then `accepted`: a connection accepted and
        // closed in between is then counted in `accepted` only.
        let mut snapshot = StatsSnapshot {
            closed_completed: self.closed_completed.load(Relaxed),
            per_ip_limit: self.per_ip_limit.load(Relaxed),
            closed_oversize: self.closed_oversize.load(Relaxed),
            closed_idle_timeout: self.closed_idle_timeout.load(Relaxed),
            closed_read_timeout: self.closed_read_timeout.load(Relaxed),
            closed_reset: self.closed_reset.load(Relaxed),
            closed_io_error: self.closed_io_error.load(Relaxed),
            closed_linger_timeout: self.closed_linger_timeout.load(Relaxed),
            closed_shutdown_cut_off: self.closed_shutdown_cut_off.load(Relaxed),
            closed_proxy_error: self.closed_proxy_error.load(Relaxed),
            ..StatsSnapshot::default()
        };
        snapshot.accepted = self.accepted.load(Relaxed);
        snapshot.replies_completed = self.replies_completed.load(Relaxed);
        snapshot.bytes_in = self.bytes_in.load(Relaxed);
        snapshot.bytes_out = self.bytes_out.load(Relaxed);
        snapshot.partial_writes = self.partial_writes.load(Relaxed);
        snapshot.bytes_discarded = self.bytes_discarded.load(Relaxed);
        snapshot.accept_backoffs = self.accept_backoffs.load(Relaxed);
        snapshot.poll_wakeups = self.poll_wakeups.load(Relaxed);
        snapshot.turns_yielded = self.turns_yielded.load(Relaxed);
        snapshot.open = snapshot.accepted.saturating_sub(snapshot.closed());
        snapshot
    }
}

impl StatsSnapshot {
    /// Connections closed so far, for every reason: the sum of the
    /// `closed_*` counters.
    pub fn closed(&self) -> u64 {
        self.closed_completed
            + self.closed_oversize
            + self.closed_idle_timeout
            + self.closed_read_timeout
            + self.closed_reset
            + self.closed_io_error
            + self.closed_linger_timeout
            + self.closed_shutdown_cut_off
            + self.per_ip_limit
            + self.closed_proxy_error
    }
}

/// Adds two snapshots counter by counter: the workers' summary is the sum
/// of every worker's counts.
impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;

    fn add(self, other: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted + other.accepted,
            open: self.open + other.open,
            replies_completed: self.replies_completed + other.replies_completed,
            bytes_in: self.bytes_in + other.bytes_in,
            bytes_out: self.bytes_out + other.bytes_out,
            partial_writes: self.partial_writes + other.partial_writes,
            bytes_discarded: self.bytes_discarded + other.bytes_discarded,
            accept_backoffs: self.accept_backoffs + other.accept_backoffs,
            per_ip_limit: self.per_ip_limit + other.per_ip_limit,
            poll_wakeups: self.poll_wakeups + other.poll_wakeups,
            turns_yielded: self.turns_yielded + other.turns_yielded,
            closed_completed: self.closed_completed + other.closed_completed,
            closed_oversize: self.closed_oversize + other.closed_oversize,
            closed_idle_timeout: self.closed_idle_timeout + other.closed_idle_timeout,
            closed_read_timeout: self.closed_read_timeout + other.closed_read_timeout,
            closed_reset: self.closed_reset + other.closed_reset,
            closed_io_error: self.closed_io_error + other.closed_io_error,
            closed_linger_timeout: self.closed_linger_timeout + other.closed_linger_timeout,
            closed_shutdown_cut_off: self.closed_shutdown_cut_off + other.closed_shutdown_cut_off,
            closed_proxy_error: self.closed_proxy_error + other.closed_proxy_error,
        }
    }
}

impl std::iter::Sum for StatsSnapshot {
    fn sum<I: Iterator<Item = StatsSnapshot>>(snapshots: I) -> StatsSnapshot {
        snapshots.fold(StatsSnapshot::default(), std::ops::Add::add)
    }
}

/// The one-line summary logged at exit, as `key=value` pairs so that scripts
/// (and the tests) can pick out a counter.
impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} replies={} completed={} bytes_in={} bytes_out={} partial_writes={} \
             discarded={} accept_backoffs={} per_ip_limit={} oversize={} idle_timeout={} \
             read_timeout={} reset={} io_error={} linger_timeout={} shutdown_cut_off={} proxy_error={}",
            self.accepted,
            self.replies_completed,
            self.closed_completed,
            self.bytes_in,
            self.bytes_out,
            self.partial_writes,
            self.bytes_discarded,
            self.accept_backoffs,
            self.per_ip_limit,
            self.closed_oversize,
            self.closed_idle_timeout,
            self.closed_read_timeout,
            self.closed_reset,
            self.closed_io_error,
            self.closed_linger_timeout,
            self.closed_shutdown_cut_off,
            self.closed_proxy_error,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDS: [CloseReason; 10] = [
        CloseReason::Completed,
        CloseReason::Oversize,
        CloseReason::IdleTimeout,
        CloseReason::ReadTimeout,
        CloseReason::Reset,
        CloseReason::IoError,
        CloseReason::LingerTimeout,
        CloseReason::ShutdownCutOff,
        CloseReason::ProxyError(crate::connection::HeaderFault::EndedEarly),
        CloseReason::PerIpLimit,
    ];

    #[test]
    fn every_way_to_end_is_counted_and_open_is_what_is_left() {
        let stats = Stats::default();
        for _ in 0..ENDS.len() + 2 {
            stats.accepted();
        }
        assert_eq!(stats.open(), ENDS.len() as u64 + 2);
        for reason in ENDS {
            stats.closed(reason);
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.closed(), ENDS.len() as u64);
        assert_eq!(snapshot.open, 2);
        assert_eq!(snapshot.closed_completed, 1);
        assert_eq!(snapshot.accepted, snapshot.open + snapshot.closed());
    }

    #[test]
    fn the_summary_names_completed_after_replies() {
        let stats = Stats::default();
        stats.accepted();
        stats.reply_completed();
        stats.closed(CloseReason::Completed);
        let line = stats.snapshot().to_string();
        assert!(line.starts_with("accepted=1 replies=1 completed=1 "), "{line}");
    }

    #[test]
    fn snapshots_add_up_counter_by_counter() {
        let one = StatsSnapshot {
            accepted: 3,
            open: 2,
            closed_reset: 1,
            ..StatsSnapshot::default()
        };
        let two = StatsSnapshot {
            accepted: 4,
            open: 1,
            closed_completed: 1,
            closed_shutdown_cut_off: 2,
            closed_proxy_error: 3,
            ..StatsSnapshot::default()
        };
        let sum: StatsSnapshot = [one, two].into_iter().sum();
        assert_eq!(sum.accepted, 7);
        assert_eq!(sum.open, 3);
        assert_eq!(sum.closed_completed, 1);
        assert_eq!(sum.closed_reset, 1);
        assert_eq!(sum.closed_shutdown_cut_off, 2);
        assert_eq!(sum.closed_proxy_error, 3);
        assert_eq!(sum.replies_completed, 0);
    }
}
