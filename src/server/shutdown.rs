//! Stopping: the stop handle, signals, taking in the backlog, the grace
//! period and the cut-off.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use log::info;
use mio::Waker;
use signal_hook::consts::SIGINT;

use super::{Phase, Server, context};

/// How [`Server::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped gracefully: every connection finished or was cut off at the
    /// end of the grace period.
    Finished,
    /// A second signal arrived during the graceful shutdown: stopped at once.
    /// Holds the signal number (the binary exits with 128 + it).
    Signalled(i32),
}

/// Stops a running server from another thread, taking the same graceful
/// path as SIGTERM. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StopHandle {
    pub(crate) requested: Arc<AtomicBool>,
    /// A signal number when the loop must exit at once (0: not asked).
    pub(crate) exit_now: Arc<AtomicI32>,
    pub(crate) waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the server to shut down gracefully and wakes its loop.
    pub fn stop(&self) -> io::Result<()> {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake()
    }

    /// Asks the loop to exit at once, as a second `signal` would: every
    /// connection is cut off and `run` returns [`Exit::Signalled`]. The
    /// workers' coordinator uses it, since it owns the signals.
    pub(crate) fn exit_now(&self, signal: i32) -> io::Result<()> {
        self.exit_now.store(signal, Ordering::SeqCst);
        self.waker.wake()
    }

    /// Whether [`exit_now`](Self::exit_now) was asked for, and with which
    /// signal.
    pub(super) fn exit_now_requested(&self) -> Option<i32> {
        match self.exit_now.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

impl Server {
    /// Closes every connection now, counted as cut off.
    pub(super) fn cut_off_all(&mut self) {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let now = Instant::now();
        for key in keys {
            if let Some(client) = self.connections.get_mut(key) {
                client.connection.cut_off(&context(
                    &self.config,
                    &self.stats,
                    &mut [],
                    now,
                    self.observer.as_deref(),
                ));
            }
            self.remove(key, now);
        }
    }

    /// First signal: graceful shutdown. A second one: exit now.
    pub(super) fn on_signals(&mut self, now: Instant) -> Option<Exit> {
        let signals: Vec<i32> = self.signals.as_mut()?.pending().collect();
        for signal in signals {
            let name = signal_name(signal);
            if matches!(self.phase, Phase::Draining { .. }) {
                info!("{name} again: exiting now");
                return Some(Exit::Signalled(signal));
            }
            self.begin_shutdown(name, now);
        }
        None
    }

    /// Stops taking clients and gives the ones in flight the grace period.
    pub(super) fn begin_shutdown(&mut self, why: &str, now: Instant) {
        let Phase::Serving(acceptor) = &mut self.phase else {
            return;
        };
        // Closing a listener resets every client still queued in its
        // backlog, so take those in first, past the connection limit, and
        // serve them with the rest. The descriptor limit was raised for
        // `max_connections + backlog`, and `Config::validate` made sure the
        // tokens can tell that many apart.
        let mut step = acceptor.begin_final();
        let limit = self
            .config
            .max_connections
            .saturating_add(self.config.backlog as usize);
        self.take_in(&mut step, limit, now);
        // Tell whoever asked (systemd's STOPPING=1) now, while the
        // connections in flight are still being served, not when `run`
        // returns.
        if let Some(hook) = self.on_shutdown.take() {
            hook();
        }
        let until = now + self.config.shutdown_grace;
        if let Phase::Serving(acceptor) = std::mem::replace(&mut self.phase, Phase::Draining { until }) {
            acceptor.close(self.poll.registry());
        }
        info!(
            "{why}: shutting down; {} in flight, {} grace",
            count(self.connections.len(), "connection"),
            humantime::format_duration(self.config.shutdown_grace)
        );
    }

    /// The grace period is over: cut off whoever is left.
    pub(super) fn end_grace_if_due(&mut self, now: Instant) {
        if let Phase::Draining { until } = self.phase
            && until <= now
        {
            if !self.connections.is_empty() {
                info!(
                    "shutdown grace over: cutting off {}",
                    count(self.connections.len(), "connection")
                );
            }
            self.cut_off_all();
        }
    }
}

/// `SIGINT` or `SIGTERM`: the two signals the server handles.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    if signal == SIGINT { "SIGINT" } else { "SIGTERM" }
}

/// `1 connection`, `2 connections`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
