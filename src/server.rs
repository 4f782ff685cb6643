//! `Server`: the readiness loop.
//!
//! One thread, one `Poll`. Registered with it: every listener, every client
//! stream, a `Waker` for the stop handle and, when asked, the signal pipe.
//! [`Server::run`] is short on purpose, like Redis's `aeMain`: wait for
//! readiness or the nearest deadline, dispatch each event to a named
//! handler, fire the timers that are due, repeat. Nothing in the loop
//! blocks: every socket is non-blocking, and the only wait is `poll` itself.
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
use crate::connection::{CloseReason, Connection, Context, Name, Turn};
use crate::deadlines::Deadlines;
use crate::listeners::{self, Listener, describe};
use crate::log_limit::LogLimiter;
use crate::stats::Stats;
use crate::token::{self, Source};

/// How long to wait before calling `accept` again after it failed for lack
/// of descriptors or memory. Retrying at once would spin: the listener stays
/// readable while clients wait in its backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the server to shut down gracefully and wakes its loop.
    pub fn stop(&self) -> io::Result<()> {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake()
    }
}

/// Whether the loop is taking new clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepting {
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

    fn on_listener_ready(&mut self, index: usize, now: Instant) {
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
    fn accept_all(&mut self, now: Instant) {
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
        let cx = Context {
            config: &self.config,
            stats: &self.stats,
            now,
        };
        client.yielded = client.connection.on_ready(&mut client.stream, &cx) == Turn::Yield;
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
            };
            client.connection.on_deadline(&cx);
            self.settle(key, now);
        }
        if let Accepting::BackingOff { retry_at } = self.accepting
            && retry_at <= now
        {
            self.accept_all(now);
        }
        if self.draining_until.is_some_and(|until| until <= now) {
            if !self.connections.is_empty() {
                info!(
                    "shutdown grace over: cutting off {}",
                    count(self.connections.len(), "connection")
                );
            }
            self.cut_off_all();
        }
    }

    fn cut_off_all(&mut self) {
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        let now = Instant::now();
        for key in keys {
            if let Some(client) = self.connections.get_mut(key) {
                client.connection.cut_off();
            }
            self.remove(key, now);
        }
    }

    /// First signal: graceful shutdown. A second one: exit now.
    fn on_signals(&mut self, now: Instant) -> Option<Exit> {
        let signals: Vec<i32> = self.signals.as_mut()?.pending().collect();
        for signal in signals {
            let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
            if self.draining_until.is_some() {
                info!("{name} again: exiting now");
                return Some(Exit::Signalled(signal));
            }
            self.begin_shutdown(name, now);
        }
        None
    }

    /// Stops taking clients and gives the ones in flight the grace period.
    fn begin_shutdown(&mut self, why: &str, now: Instant) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(now + self.config.shutdown_grace);
        // Closing a listener resets every client still queued in its
        // backlog, so take those in first and serve them with the rest.
        self.accept_all(now);
        for mut listener in self.listeners.drain(..) {
            if let Err(e) = self.poll.registry().deregister(&mut listener.socket) {
                trace!("listener {}: deregister failed: {e}", listener.address);
            }
        }
        self.accepting = Accepting::Closed;
        info!(
            "{why}: shutting down; {} in flight, {} grace",
            count(self.connections.len(), "connection"),
            humantime::format_duration(self.config.shutdown_grace)
        );
    }

    fn log_summary(&self) {
        info!("summary: {}", self.stats.snapshot());
    }
}

/// `1 connection`, `2 connections`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
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
