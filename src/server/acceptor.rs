//! `Acceptor`: taking clients in, as one step of the loop.
//!
//! Listener events and freed slots only mark accepting as *due*; the loop's
//! accept step ([`Server::accept_step`](super::Server)) then runs after
//! dispatch and timers, like Redis's `beforeSleep`. A step accepts while the
//! table has room, drains each listener to `WouldBlock` (readiness is
//! edge-triggered: clients left queued would produce no further event), and
//! starts one listener further on than the step before, so that under
//! steady pressure a second listener (`::1`, say) cannot starve behind the
//! first.
//!
//! The acceptor owns the listeners and one [`State`]. Each state carries
//! what its log lines need, so an episode (the connection limit, `accept`
//! failing) is announced once and its end once, through the limiters of
//! [`ClientLines`]. There is no "closed" state: when the server drains, its
//! phase no longer holds an acceptor at all (see `Phase` in `server.rs`).
//!
//! The acceptor never touches a socket type directly: it drives the
//! [`Listen`] trait, which a scripted fake implements in the tests below,
//! the way `Transport` fakes a connection's stream.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry};

use crate::error::{describe, interrupted, would_block};
use crate::listeners::Listener;
use crate::log_limit::ClientLines;
use crate::stats::Stats;
use crate::token;

/// How long to wait before calling `accept` again after it failed for lack
/// of descriptors or memory. Retrying at once would spin: the listener stays
/// readable while clients wait in its backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket, as the acceptor sees it: accept one queued client.
pub(crate) trait Listen {
    /// What an accepted client is.
    type Stream;
    /// Takes one client from the backlog, or `WouldBlock` when it is empty.
    fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)>;
    /// The bound address, for log lines.
    fn address(&self) -> SocketAddr;
}

impl Listen for Listener {
    type Stream = TcpStream;

    fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.socket.accept()
    }

    fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Whether, and why not, clients are being taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Taking clients.
    Open {
        /// A listener reported readiness, a slot freed or a back-off ended
        /// since the last step: the next step has work to do.
        due: bool,
        /// An episode that is over but whose end has not been seen yet.
        recovering: Option<Episode>,
    },
    /// The table is full. New clients wait in the kernel backlog until a
    /// connection closes.
    AtCapacity {
        /// A listener reported readiness while full, so a client is known to
        /// be waiting (and the warning has been given).
        clients_waiting: bool,
    },
    /// `accept` failed (out of descriptors, say): try again at `retry_at`.
    BackingOff { retry_at: Instant },
}

impl State {
    /// What a listener's readiness leads to in this state, for its log line.
    fn on_ready(&self) -> &'static str {
        match self {
            State::Open { .. } => "accepting after this batch of events",
            State::AtCapacity { .. } => "not accepting: at the connection limit",
            State::BackingOff { .. } => "not accepting until the back-off ends",
        }
    }
}

/// An episode whose end gets its own log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Episode {
    /// Clients waited at the connection limit. Over when every listener's
    /// backlog has been drained.
    LimitReached,
    /// `accept` failed. Over at the first accept that works.
    AcceptFailing,
}

/// One accept step in progress: where it started and how many listeners it
/// has drained. A plain value the server holds for the length of the step.
#[derive(Debug)]
pub(crate) struct Step {
    start: usize,
    drained: usize,
}

/// The listeners and whether clients are being taken in.
#[derive(Debug)]
pub(crate) struct Acceptor<L> {
    listeners: Vec<L>,
    state: State,
    /// Where the next step starts: one further each step (rotation).
    next_start: usize,
    /// `max_connections`, for the warning.
    max_connections: usize,
}

impl<L: Listen> Acceptor<L> {
    pub(crate) fn new(listeners: Vec<L>, max_connections: usize) -> Self {
        Acceptor {
            listeners,
            state: State::Open {
                due: false,
                recovering: None,
            },
            next_start: 0,
            max_connections,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Listener `index` reported readiness: accepting is due, or, with the
    /// table full, a client is known to be waiting (warned about, through
    /// its limiter, once per episode).
    pub(crate) fn on_listener_ready(&mut self, index: usize, now: Instant, lines: &mut ClientLines) {
        if let Some(listener) = self.listeners.get(index) {
            debug!(
                "listener {}: readable: {}",
                listener.address(),
                self.state.on_ready()
            );
        }
        match &mut self.state {
            State::Open { due, .. } => *due = true,
            State::AtCapacity { clients_waiting } if !*clients_waiting => {
                *clients_waiting = true;
                if lines.connection_limit.allow(now) {
                    warn!(
                        "connection limit ({}) reached: new clients wait in the backlog until a connection closes",
                        self.max_connections
                    );
                }
            }
            // Already warned; or backing off, and the retry will see them.
            State::AtCapacity { .. } | State::BackingOff { .. } => {}
        }
    }

    /// A connection closed: if the table was full, accepting is due again.
    pub(crate) fn on_slot_freed(&mut self) {
        if let State::AtCapacity { clients_waiting } = self.state {
            trace!("below the connection limit again: accepting is due");
            self.state = State::Open {
                due: true,
                recovering: clients_waiting.then_some(Episode::LimitReached),
            };
        }
    }

    /// When a back-off ends: `poll` must wake by then.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        match self.state {
            State::BackingOff { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// Starts a step, if one is due at `now`.
    pub(crate) fn begin(&mut self, now: Instant) -> Option<Step> {
        let recovering = match self.state {
            State::Open {
                due: true,
                recovering,
            } => recovering,
            State::BackingOff { retry_at } if retry_at <= now => Some(Episode::AcceptFailing),
            _ => return None,
        };
        Some(self.start_step(recovering))
    }

    /// Starts the last step before the listeners close, whatever the state:
    /// closing a listener resets every client still in its backlog.
    pub(crate) fn begin_final(&mut self) -> Step {
        let recovering = match self.state {
            State::Open { recovering, .. } => recovering,
            State::AtCapacity { .. } | State::BackingOff { .. } => None,
        };
        self.start_step(recovering)
    }

    fn start_step(&mut self, recovering: Option<Episode>) -> Step {
        self.state = State::Open {
            due: false,
            recovering,
        };
        let start = self.next_start;
        self.next_start = (start + 1) % self.listeners.len().max(1);
        Step { start, drained: 0 }
    }

    /// The next client of this step, or `None` when the step is over: every
    /// listener drained, no `room` left, or `accept` failing.
    pub(crate) fn next(
        &mut self,
        step: &mut Step,
        room: bool,
        now: Instant,
        lines: &mut ClientLines,
        stats: &Stats,
    ) -> Option<(L::Stream, SocketAddr)> {
        loop {
            if step.drained >= self.listeners.len() {
                self.end_episode(now, lines);
                return None;
            }
            if !room {
                let waiting = self.recovering() == Some(Episode::LimitReached);
                self.state = State::AtCapacity {
                    clients_waiting: waiting,
                };
                return None;
            }
            let index = (step.start + step.drained) % self.listeners.len();
            let listener = &mut self.listeners[index];
            let address = listener.address();
            match listener.accept() {
                Ok(client) => {
                    if self.recovering() == Some(Episode::AcceptFailing) {
                        self.end_episode(now, lines);
                    }
                    return Some(client);
                }
                // This backlog is empty: on to the next listener.
                Err(e) if would_block(&e) => step.drained += 1,
                // A signal arrived mid-call: call again.
                Err(e) if interrupted(&e) => {}
                // The client gave up while it waited in the backlog: it is
                // gone, the others are still there.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                    ) =>
                {
                    debug!("listener {address}: queued client went away: {e}");
                }
                // EMFILE/ENFILE (out of descriptors) and ENOBUFS/ENOMEM are
                // the usual causes. The clients stay queued; retry after a
                // pause instead of spinning on a listener that stays readable.
                Err(e) => {
                    if self.recovering() != Some(Episode::AcceptFailing) && lines.accept_failed.allow(now) {
                        warn!(
                            "accept on {address} failed: {}; retrying every {} ms until it succeeds",
                            describe(&e),
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    stats.accept_backoff();
                    self.state = State::BackingOff {
                        retry_at: now + ACCEPT_BACKOFF,
                    };
                    return None;
                }
            }
        }
    }

    fn recovering(&self) -> Option<Episode> {
        match self.state {
            State::Open { recovering, .. } => recovering,
            State::AtCapacity { .. } | State::BackingOff { .. } => None,
        }
    }

    /// Logs the end of the episode being recovered from, if any.
    fn end_episode(&mut self, now: Instant, lines: &mut ClientLines) {
        let State::Open { recovering, .. } = &mut self.state else {
            return;
        };
        match recovering.take() {
            Some(Episode::LimitReached) if lines.backlog_drained.allow(now) => {
                info!("backlog drained: below the connection limit again");
            }
            Some(Episode::AcceptFailing) if lines.accept_recovered.allow(now) => {
                info!("accept works again");
            }
            _ => {}
        }
    }
}

impl Acceptor<Listener> {
    /// Registers every listener with the poll.
    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (index, listener) in self.listeners.iter_mut().enumerate() {
            registry.register(&mut listener.socket, token::listener(index), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Deregisters and closes every listener.
    pub(crate) fn close(self, registry: &Registry) {
        for mut listener in self.listeners {
            if let Err(e) = registry.deregister(&mut listener.socket) {
                trace!("listener {}: deregister failed: {e}", listener.address);
            }
        }
    }
}

#[cfg(test)]
mod tests;
