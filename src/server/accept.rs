//! Taking clients in: accept until `WouldBlock`, stop at the connection
//! limit, and back off instead of spinning when `accept` fails.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::Interest;
use mio::net::TcpStream;

use super::{Client, Server};
use crate::connection::{CloseReason, Connection, Name};
use crate::listeners::describe;
use crate::token;

/// How long to wait before calling `accept` again after it failed for lack
/// of descriptors or memory. Retrying at once would spin: the listener stays
/// readable while clients wait in its backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether the loop is taking new clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accepting {
    Open,
    /// At `max_connections`. New clients wait in the kernel backlog; accepting
    /// resumes when a connection closes.
    AtCapacity,
    /// `accept` failed (out of descriptors, say); try again at `retry_at`.
    BackingOff {
        retry_at: Instant,
    },
    /// Shutting down: the listeners are closed.
    Closed,
}

impl Server {
    pub(super) fn on_listener_ready(&mut self, index: usize, now: Instant) {
        if let Some(listener) = self.listeners.get(index) {
            debug!("listener {}: readable", listener.address);
        }
        // At capacity or backing off, queued clients stay in the backlog;
        // accepting resumes when a slot frees or the back-off ends.
        if self.accepting == Accepting::Open {
            self.accept_from(index, now);
        }
    }

    /// Accepts until `WouldBlock`: readiness is edge-triggered, so clients
    /// left in the backlog now would produce no further event.
    fn accept_from(&mut self, index: usize, now: Instant) {
        loop {
            // While shutting down, the backlog is taken in whole even past the
            // limit: its clients would be reset otherwise, and the descriptor
            // limit was raised for `max_connections + backlog`.
            let shutting_down = self.draining_until.is_some();
            if !shutting_down && self.connections.len() >= self.config.max_connections {
                if !self.limit_reached {
                    self.limit_reached = true;
                    warn!(
                        "connection limit ({}) reached: new clients wait in the backlog until a connection closes",
                        self.config.max_connections
                    );
                }
                self.accepting = Accepting::AtCapacity;
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    self.end_accept_failure();
                    self.admit(stream, peer, now);
                }
                // The backlog is empty: any episode of pressure is over.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.end_accept_failure();
                    if self.limit_reached {
                        self.limit_reached = false;
                        info!("backlog drained: below the connection limit again");
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The client gave up while it waited in the backlog.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                    ) =>
                {
                    debug!("listener {}: queued client went away: {e}", listener.address);
                }
                Err(e) => {
                    // EMFILE/ENFILE (out of descriptors) and ENOBUFS/ENOMEM
                    // are the usual causes. The clients stay queued; retry
                    // after a pause instead of spinning on a listener that
                    // stays readable.
                    if !self.accept_failing {
                        warn!(
                            "accept on {} failed: {}; retrying every {} ms until it succeeds",
                            listener.address,
                            describe(&e),
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_failing = true;
                    }
                    self.stats.accept_backoff();
                    self.accepting = Accepting::BackingOff {
                        retry_at: now + ACCEPT_BACKOFF,
                    };
                    return;
                }
            }
        }
    }

    fn end_accept_failure(&mut self) {
        if self.accept_failing {
            self.accept_failing = false;
            info!("accept works again");
        }
    }

    /// Tries every listener: after a slot frees, after a back-off, and
    /// before the listeners close at shutdown.
    pub(super) fn accept_all(&mut self, now: Instant) {
        if self.accepting == Accepting::Closed {
            return;
        }
        self.accepting = Accepting::Open;
        for index in 0..self.listeners.len() {
            if self.accepting != Accepting::Open {
                return;
            }
            self.accept_from(index, now);
        }
    }

    /// Takes in one accepted client: a slab slot, a token, READABLE interest.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        self.next_id += 1;
        let name = Name {
            id: self.next_id,
            peer: Some(peer),
        };
        let entry = self.connections.vacant_entry();
        let token = token::connection(entry.key(), name.id);
        // Readable first: the client speaks first. An edge-triggered
        // registration still reports data that arrived before it.
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            warn!("{name}: cannot register with the poll: {e}; closing it");
            self.stats.accepted();
            self.stats.closed(CloseReason::IoError);
            return;
        }
        let connection = Connection::new(name, now);
        let deadline = connection.deadline(&self.config);
        entry.insert(Client {
            connection,
            stream,
            token,
            interest: Interest::READABLE,
            deadline,
            yielded: false,
        });
        self.deadlines.reschedule(token, None, deadline);
        self.stats.accepted();
        debug!("{name}: accepted");
    }

    /// The back-off after a failed `accept` is over: try every listener.
    pub(super) fn retry_accept_if_due(&mut self, now: Instant) {
        if let Accepting::BackingOff { retry_at } = self.accepting
            && retry_at <= now
        {
            self.accept_all(now);
        }
    }
}
