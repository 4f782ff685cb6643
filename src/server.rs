//! `Server`: the readiness loop.
//!
//! One thread, one `Poll`. Registered with it: every listener, every client
//! stream, a `Waker` for the stop handle and, when asked, the signal pipe.
//! [`Server::run`] is short on purpose, like Redis's `aeMain`: wait for
//! readiness or the nearest deadline, dispatch each event to a named
//! handler, fire the timers that are due, repeat. Nothing in the loop
//! blocks: every socket is non-blocking, and the only wait is `poll` itself.
//!
//! This file holds the loop and what every connection goes through after an
//! input (`settle`, `remove`); `accept.rs` takes clients in and
//! `shutdown.rs` stops.
//!
//! A client's failure ends that client alone: it is logged with the
//! connection's name, counted, and the loop goes on. Only a failure of
//! `poll` itself ends the server.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, error, info, trace, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::Config;
use crate::connection::{self, CloseReason, Connection, Context, Turn};
use crate::deadlines::Deadlines;
use crate::listeners::{self, Listener, describe};
use crate::log_limit::LogLimiter;
use crate::stats::Stats;
use crate::token::{self, Source};
use crate::transport;

mod accept;
mod shutdown;

pub use accept::ACCEPT_BACKOFF;
use accept::Accepting;
pub use shutdown::{Exit, StopHandle};

/// One client: its state machine, its socket, and what the loop registered
/// and scheduled for it (kept so that changes can be detected).
#[derive(Debug)]
struct Client {
    connection: Connection,
    stream: TcpStream,
    /// Slab key plus generation: see [`crate::token`].
    token: Token,
    /// The interest currently registered with the poll.
    interest: Interest,
    /// The deadline currently in [`Deadlines`].
    deadline: Option<Instant>,
    /// Out of budget last turn and queued in `Server::yielded`.
    yielded: bool,
}

/// A bound reverse-echo server. [`Server::bind`] it, read its
/// [`local_addrs`](Server::local_addrs), then [`run`](Server::run) it.
pub struct Server {
    config: Config,
    poll: Poll,
    listeners: Vec<Listener>,
    /// The bound addresses, kept after the listeners close at shutdown.
    addresses: Vec<SocketAddr>,
    connections: Slab<Client>,
    deadlines: Deadlines,
    /// Connections that used up their turn's budget while still ready.
    yielded: Vec<Token>,
    accepting: Accepting,
    /// Set while descriptors are short, so the episode is logged once.
    accept_failing: bool,
    /// Set from reaching `max_connections` until the backlog is empty again,
    /// so a server under steady pressure warns once, not on every close.
    limit_reached: bool,
    /// Set once shutdown has begun: when the grace period ends.
    draining_until: Option<Instant>,
    next_id: u64,
    stats: Arc<Stats>,
    stop_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    /// Rate limit for warnings a client can provoke.
    client_warnings: LogLimiter,
    /// Where every connection's reads land first (see [`Context::scratch`]):
    /// allocated once, so a connection's own buffer holds only what arrived.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addresses", &self.addresses)
            .field("connections", &self.connections.len())
            .field("accepting", &self.accepting)
            .field("draining_until", &self.draining_until)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks `config`, binds every listen address and registers everything
    /// with a new `Poll`. Errors are one line each, such as `cannot listen on
    /// 127.0.0.1:7342: address already in use`.
    pub fn bind(config: Config) -> io::Result<Server> {
        config
            .validate()
            .map_err(|message| io::Error::new(ErrorKind::InvalidInput, message))?;
        let poll = Poll::new()?;
        let mut listeners = listeners::bind_all(&config.listen, config.backlog)?;
        for (index, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut listener.socket, token::listener(index), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let addresses = listeners.iter().map(|listener| listener.address).collect();
        let scratch = vec![0; connection::scratch_len(&config)];
        Ok(Server {
            config,
            poll,
            listeners,
            addresses,
            connections: Slab::new(),
            deadlines: Deadlines::new(),
            yielded: Vec::new(),
            accepting: Accepting::Open,
            accept_failing: false,
            limit_reached: false,
            draining_until: None,
            next_id: 0,
            stats: Arc::new(Stats::default()),
            stop_requested: Arc::new(AtomicBool::new(false)),
            waker,
            signals,
            client_warnings: LogLimiter::new(5, Duration::from_secs(10)),
            scratch,
        })
    }

    /// The addresses actually bound (with real ports where 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The settings this server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live counters, readable from any thread.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// A handle that stops [`run`](Server::run) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            requested: Arc::clone(&self.stop_requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Serves until stopped (by the stop handle or, when enabled, a signal),
    /// then logs a summary. Returns an error only if `poll` itself fails.
    pub fn run(&mut self) -> io::Result<Exit> {
        info!(
            "serving: framing {}, max message {} bytes, max connections {}",
            self.config.framing, self.config.max_message, self.config.max_connections
        );
        let mut events = Events::with_capacity(1024);
        let exit = loop {
            if self.draining_until.is_some() && self.connections.is_empty() {
                break Exit::Finished;
            }
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => self.stats.poll_wakeup(),
                // A signal interrupted the wait. mio 1.x hands this back
                // instead of retrying, so retry here.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("poll failed: {e}");
                    self.log_summary();
                    return Err(io::Error::new(e.kind(), format!("poll failed: {}", describe(&e))));
                }
            }
            let now = Instant::now();
            if let Some(exit) = self.dispatch(&events, now) {
                break exit;
            }
            self.resume_yielded(now);
            self.fire_timers(now);
        };
        if exit != Exit::Finished {
            self.cut_off_all();
        }
        self.log_summary();
        Ok(exit)
    }

    /// How long `poll` may sleep: until the nearest deadline, or not at all
    /// if some connection yielded with work left.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.yielded.is_empty() {
            return Some(Duration::ZERO);
        }
        let accept_retry = match self.accepting {
            Accepting::BackingOff { retry_at } => Some(retry_at),
            _ => None,
        };
        [self.deadlines.next(), accept_retry, self.draining_until]
            .into_iter()
            .flatten()
            .min()
            .map(|wake_at| wake_at.saturating_duration_since(now))
    }

    /// Hands each event to its handler. Returns an exit when a second
    /// signal asks for one.
    fn dispatch(&mut self, events: &Events, now: Instant) -> Option<Exit> {
        for event in events.iter() {
            match token::source(event.token()) {
                Source::Listener(index) => self.on_listener_ready(index, now),
                Source::Connection(key) => self.on_connection_ready(key, event, now),
                Source::Signals => {
                    if let Some(exit) = self.on_signals(now) {
                        return Some(exit);
                    }
                }
                Source::Waker => {
                    if self.stop_requested.load(Ordering::SeqCst) {
                        self.begin_shutdown("stop requested", now);
                    }
                }
            }
        }
        None
    }

    fn on_connection_ready(&mut self, key: usize, event: &Event, now: Instant) {
        let Some(client) = self.connections.get_mut(key) else {
            debug!("stale event for free slot {key}, ignored");
            return;
        };
        // The slot may hold a newer connection than the event was for: see
        // the generation in `crate::token`.
        if client.token != event.token() {
            debug!(
                "stale event for slot {key} (now {}), ignored",
                client.connection.name()
            );
            return;
        }
        debug!("{}: {}", client.connection.name(), describe_event(event));
        // A connection that yielded is already due another turn after this
        // batch; a second turn now would undo the fairness of the budget.
        if client.yielded {
            return;
        }
        self.take_turn(key, now);
    }

    /// Gives connections that ran out of budget another turn.
    fn resume_yielded(&mut self, now: Instant) {
        for token in std::mem::take(&mut self.yielded) {
            let Some(key) = self.key_of(token) else {
                continue;
            };
            if let Some(client) = self.connections.get(key) {
                trace!("{}: resuming after yielding", client.connection.name());
            }
            self.take_turn(key, now);
        }
    }

    /// One turn of a connection: as much of its state's work as the kernel
    /// allows within the budget, then [`settle`](Self::settle).
    fn take_turn(&mut self, key: usize, now: Instant) {
        let Some(client) = self.connections.get_mut(key) else {
            return;
        };
        let mut cx = Context {
            config: &self.config,
            stats: &self.stats,
            now,
            scratch: &mut self.scratch,
        };
        client.yielded = client.connection.on_ready(&mut client.stream, &mut cx) == Turn::Yield;
        if client.yielded {
            self.yielded.push(client.token);
        }
        self.settle(key, now);
    }

    /// The slab key of the connection `token` names, if that connection is
    /// still there (and not a newer one in its slot).
    fn key_of(&self, token: Token) -> Option<usize> {
        let Source::Connection(key) = token::source(token) else {
            return None;
        };
        let client = self.connections.get(key)?;
        (client.token == token).then_some(key)
    }

    /// After any input: free the slot if the connection closed, otherwise
    /// bring the registered interest and the scheduled deadline in line
    /// with the new state. Re-registering costs a system call, so it happens
    /// only when the interest actually changes.
    fn settle(&mut self, key: usize, now: Instant) {
        let Some(client) = self.connections.get_mut(key) else {
            return;
        };
        let Some(interest) = client.connection.interest() else {
            self.remove(key, now);
            return;
        };
        if interest != client.interest {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut client.stream, client.token, interest)
            {
                warn!(
                    "{}: cannot change interest: {e}; closing it",
                    client.connection.name()
                );
                client.connection.abandon(CloseReason::IoError);
                self.remove(key, now);
                return;
            }
            client.interest = interest;
        }
        let deadline = client.connection.deadline(&self.config);
        self.deadlines.reschedule(client.token, client.deadline, deadline);
        client.deadline = deadline;
    }

    /// Deregisters, unschedules, counts and closes one connection, then
    /// resumes accepting if the server was at capacity.
    fn remove(&mut self, key: usize, now: Instant) {
        let Some(mut client) = self.connections.try_remove(key) else {
            return;
        };
        // Deregister before the socket closes and the slot can be reused.
        if let Err(e) = self.poll.registry().deregister(&mut client.stream) {
            trace!("{}: deregister failed: {e}", client.connection.name());
        }
        self.deadlines.reschedule(client.token, client.deadline, None);
        let name = client.connection.name();
        // Every path closes the connection before removing it.
        let reason = client.connection.close_reason().unwrap_or(CloseReason::IoError);
        self.stats.closed(reason);
        match reason {
            CloseReason::Completed => debug!("{name}: closed"),
            // A client can provoke this at will: rate-limited, and past the
            // limit it still shows at debug.
            CloseReason::Oversize if self.client_warnings.allow(now) => {
                warn!("{name}: closed: sent more than {} bytes", self.config.max_message);
            }
            _ => debug!("{name}: closed: {reason}"),
        }
        if client.connection.closes_with_reset()
            && let Err(e) = transport::reset_on_close(&client.stream)
        {
            trace!("{name}: cannot set SO_LINGER 0: {e}");
        }
        drop(client);
        if self.accepting == Accepting::AtCapacity {
            debug!("below the connection limit again: accepting");
            self.accept_all(now);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(token) = self.deadlines.pop_expired(now) {
            let Some(key) = self.key_of(token) else {
                continue;
            };
            let Some(client) = self.connections.get_mut(key) else {
                continue;
            };
            // The entry just popped is no longer in the queue.
            client.deadline = None;
            let cx = Context {
                config: &self.config,
                stats: &self.stats,
                now,
                scratch: &mut self.scratch,
            };
            client.connection.on_deadline(&cx);
            self.settle(key, now);
        }
        self.retry_accept_if_due(now);
        self.end_grace_if_due(now);
    }

    fn log_summary(&self) {
        info!("summary: {}", self.stats.snapshot());
    }
}

/// `readable`, `writable | read closed`, …: what a readiness event says.
fn describe_event(event: &Event) -> String {
    let flags = [
        (event.is_readable(), "readable"),
        (event.is_writable(), "writable"),
        (event.is_read_closed(), "read closed"),
        (event.is_write_closed(), "write closed"),
        (event.is_error(), "error"),
    ];
    let names: Vec<&str> = flags
        .iter()
        .filter(|(set, _)| *set)
        .map(|&(_, name)| name)
        .collect();
    if names.is_empty() {
        "event with no flags".into()
    } else {
        names.join(" | ")
    }
}
