//! `Server`: the readiness loop.
//!
//! One thread, one `Poll`. Registered with it: every listener, every client
//! stream, a `Waker` for the stop handle and, when asked, the signal pipe.
//! [`Server::run`] is short on purpose, like Redis's `aeMain` with its
//! `beforeSleep`: wait for readiness or the nearest deadline, dispatch each
//! event to a named handler, resume the connections that yielded, fire the
//! timers that are due, accept. Nothing in the loop blocks: every socket is
//! non-blocking, and the only wait is `poll` itself.
//!
//! This file holds the loop, the accept step and what every connection goes
//! through after an input (`settle`, `remove`). Beside it: `acceptor.rs`
//! decides when and from which listener to accept, `client.rs` owns a
//! client's registration with the poll, `per_ip.rs` counts connections per
//! address, and `shutdown.rs` stops.
//!
//! A client's failure ends that client alone: it is logged with the
//! connection's name, counted, and the loop goes on. Only a failure of
//! `poll` itself ends the server.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use log::{debug, error, info, trace, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::Config;
use crate::connection::{self, CloseReason, Connection, Context, HeaderFault, Name, State, Turn};
use crate::deadlines::Deadlines;
use crate::error::{describe, interrupted};
use crate::listeners::{self, Listener};
use crate::log_limit::ClientLines;
use crate::observer::{self, Observer, WokeBy};
use crate::stats::Stats;
use crate::token::{self, Source};

mod acceptor;
mod client;
mod per_ip;
mod shutdown;

pub use acceptor::ACCEPT_BACKOFF;
use acceptor::{Acceptor, Step};
use client::Client;
use per_ip::{AddressGroup, Charge};
pub(crate) use per_ip::{PerAddress, PerIp};
pub(crate) use shutdown::signal_name;
pub use shutdown::{Exit, StopHandle};

/// Where the server is in its life. Stored once: whether it accepts follows
/// from it, since only a serving server has an acceptor.
#[derive(Debug)]
enum Phase {
    /// Taking clients and serving them.
    Serving(Acceptor<Listener>),
    /// Shutting down: the listeners are closed, the connections in flight
    /// have until `until` to finish.
    Draining { until: Instant },
}

/// A bound reverse-echo server. [`Server::bind`] it, read its
/// [`local_addrs`](Server::local_addrs), then [`run`](Server::run) it.
pub struct Server {
    config: Config,
    poll: Poll,
    phase: Phase,
    /// The bound addresses, kept after the listeners close at shutdown.
    addresses: Vec<SocketAddr>,
    connections: Slab<Client>,
    /// Connections held per address, against `max_connections_per_ip`:
    /// this server's own, or shared by every worker.
    per_address: PerIp,
    deadlines: Deadlines,
    /// Connections that used up their turn's budget while still ready.
    yielded: Vec<Token>,
    next_id: u64,
    stats: Arc<Stats>,
    stop_requested: Arc<AtomicBool>,
    /// Set (to a signal number) by the workers' coordinator on a second
    /// signal: exit at once.
    exit_now: Arc<AtomicI32>,
    waker: Arc<Waker>,
    signals: Option<Signals>,
    /// One rate limit per kind of log line a client can cause.
    lines: ClientLines,
    /// Where every connection's reads land first (see [`Context::scratch`]):
    /// allocated once, so a connection's own buffer holds only what arrived.
    scratch: Vec<u8>,
    /// Who watches the loop's events, if anyone: see [`Server::set_observer`].
    observer: Option<Box<dyn Observer>>,
    /// Called once, when shutdown begins.
    on_shutdown: Option<Box<dyn FnOnce() + Send>>,
    /// Whether this server is one of several [`Workers`](crate::Workers):
    /// then the workers log the start line and one summed summary, not
    /// each server.
    is_worker: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addresses", &self.addresses)
            .field("connections", &self.connections.len())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// What every input to a connection needs besides the connection itself.
/// Built in this one place so that the loop's turns and timers agree. It
/// takes the fields it borrows rather than `&self`, so that a client in
/// `connections` can be borrowed mutably beside it.
/// The most connection slots reserved before the first client: 1 Mi slots,
/// about 150 MiB of address space, none of it resident until used.
const RESERVED_CONNECTIONS_MAX: usize = 1 << 20;

fn context<'a>(
    config: &'a Config,
    stats: &'a Stats,
    scratch: &'a mut [u8],
    now: Instant,
    observer: Option<&'a dyn Observer>,
) -> Context<'a> {
    Context {
        config,
        stats,
        now,
        scratch,
        observer,
        admission: None,
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
        let listeners = listeners::bind_all(&config.listen, config.backlog, false)?;
        let per_address = PerIp::own(config.max_connections_per_ip);
        Server::assemble(config, listeners, per_address)
    }

    /// Serves sockets that are already bound and listening, such as the
    /// ones systemd hands over (socket activation), instead of binding
    /// `config.listen`, which is ignored, as is `config.backlog` (the
    /// listen backlog was fixed by whoever called `listen`). Each listener
    /// is made non-blocking here: sockets handed over are usually blocking,
    /// and a blocking `accept` would stall the loop.
    pub fn from_listeners(config: Config, listeners: Vec<std::net::TcpListener>) -> io::Result<Server> {
        config
            .validate_limits()
            .map_err(|message| io::Error::new(ErrorKind::InvalidInput, message))?;
        let listeners = listeners
            .into_iter()
            .map(listeners::adopt)
            .collect::<io::Result<Vec<Listener>>>()?;
        let per_address = PerIp::own(config.max_connections_per_ip);
        Server::assemble(config, listeners, per_address)
    }

    /// Registers `listeners`, the waker and (when asked) the signals with a
    /// new `Poll`. `config` has been validated.
    pub(crate) fn assemble(
        config: Config,
        listeners: Vec<Listener>,
        per_address: PerIp,
    ) -> io::Result<Server> {
        if listeners.is_empty() {
            return Err(io::Error::new(ErrorKind::InvalidInput, "no socket to listen on"));
        }
        let poll = Poll::new()?;
        let addresses = listeners.iter().map(|listener| listener.address).collect();
        let mut acceptor = Acceptor::new(listeners, config.max_connections);
        acceptor.register(poll.registry())?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let scratch = vec![0; connection::scratch_len(&config)];
        // Room for every connection the limit allows, reserved up front (up
        // to a bound, past which the slab grows as usual): the kernel backs
        // a page only when a connection first lands on it, so this costs no
        // memory until used, and a growing server never copies its slab or
        // deadline heap into a new allocation, whose abandoned old copy the
        // allocator could keep resident (about 20 bytes per connection
        // measured at 10,000 idle connections; docs/benchmarks.md).
        let reserved = config.max_connections.min(RESERVED_CONNECTIONS_MAX);
        Ok(Server {
            per_address,
            config,
            poll,
            phase: Phase::Serving(acceptor),
            addresses,
            connections: Slab::with_capacity(reserved),
            deadlines: Deadlines::with_capacity(reserved),
            yielded: Vec::new(),
            next_id: 0,
            stats: Arc::new(Stats::default()),
            stop_requested: Arc::new(AtomicBool::new(false)),
            exit_now: Arc::new(AtomicI32::new(0)),
            waker,
            signals,
            lines: ClientLines::new(),
            scratch,
            observer: None,
            on_shutdown: None,
            is_worker: false,
        })
    }

    /// Reports every event of the loop to `observer` from now on (replacing
    /// any earlier one): `poll` returns, reads, writes, `WouldBlock`, state
    /// and registration changes, closes. See [`crate::observer`].
    pub fn set_observer(&mut self, observer: impl Observer + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// Makes this server one of several workers (see `is_worker`).
    pub(crate) fn into_worker(mut self) -> Server {
        self.is_worker = true;
        self
    }

    /// Calls `hook` once, when shutdown begins (a signal, the stop handle):
    /// before the connections in flight have finished, unlike the return
    /// of [`run`](Server::run). The `revecho` binary sends systemd's
    /// `STOPPING=1` from it.
    pub fn on_shutdown(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.on_shutdown = Some(Box::new(hook));
    }

    /// The waker of this server's loop, for heartbeat requests: a wake-up
    /// with no stop requested makes the loop turn once and nothing else.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
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
            exit_now: Arc::clone(&self.exit_now),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Serves until stopped (by the stop handle or, when enabled, a signal),
    /// then logs a summary. Returns an error only if `poll` itself fails.
    pub fn run(&mut self) -> io::Result<Exit> {
        if !self.is_worker {
            log_start(&self.config, self.config.max_connections);
        }
        let mut events = Events::with_capacity(1024);
        // When the current wait began: kept across a retry after a signal,
        // so that the wakeup line reports the whole sleep.
        let mut asleep_since = None;
        let exit = loop {
            if matches!(self.phase, Phase::Draining { .. }) && self.connections.is_empty() {
                break Exit::Finished;
            }
            let before = Instant::now();
            let since = *asleep_since.get_or_insert(before);
            let timeout = self.poll_timeout(before);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => self.stats.poll_wakeup(),
                // A signal interrupted the wait. mio 1.x hands this back
                // instead of retrying, so retry here.
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    error!("poll failed: {e}");
                    self.log_summary();
                    return Err(io::Error::new(e.kind(), format!("poll failed: {}", describe(&e))));
                }
            }
            let now = Instant::now();
            asleep_since = None;
            self.on_wakeup(&events, since, now);
            if let Some(exit) = self.dispatch(&events, now) {
                break exit;
            }
            self.resume_yielded(now);
            self.fire_timers(now);
            self.accept_step(now);
        };
        if exit != Exit::Finished {
            self.cut_off_all();
        }
        self.log_summary();
        Ok(exit)
    }

    /// Reports a `poll` return: one debug line and one observer event.
    ///
    /// A line per wakeup is a line per wakeup, and a client can cause
    /// wakeups, as many as it likes. That is acceptable at debug level:
    /// debug is off by default and opt-in for someone watching the loop
    /// (a learner, or an operator reproducing a problem), and every line a
    /// client can cause at the default level is rate-limited (`log_limit`).
    fn on_wakeup(&self, events: &Events, since: Instant, now: Instant) {
        // Nobody watching: one branch (two loads), nothing counted.
        if self.observer.is_none() && !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let slept = now.saturating_duration_since(since);
        let count = events.iter().count();
        let woke_by = if events.iter().any(|event| event.token() == token::WAKER) {
            WokeBy::Waker
        } else if count > 0 {
            WokeBy::Events
        } else {
            WokeBy::Timeout
        };
        if log::log_enabled!(log::Level::Debug) {
            let slept = duration(slept);
            match woke_by {
                WokeBy::Events => debug!(
                    "poll: slept {slept}, woke by {}: dispatching",
                    events_count(count)
                ),
                WokeBy::Waker => debug!(
                    "poll: slept {slept}, woke by the waker ({}): checking for a stop request",
                    events_count(count)
                ),
                WokeBy::Timeout if !self.yielded.is_empty() => debug!(
                    "poll: slept {slept}, woke by the timeout (0: {} yielded with work left): resuming",
                    connections_count(self.yielded.len())
                ),
                WokeBy::Timeout => debug!("poll: slept {slept}, woke by the timeout: firing due timers"),
            }
        }
        observer::report(self.observer.as_deref(), || observer::Event::Poll {
            events: count,
            slept,
            woke_by,
        });
    }

    /// How long `poll` may sleep: until the nearest deadline (a connection's
    /// timeout, the end of an accept back-off or of the shutdown grace, a
    /// pending report of suppressed log lines), or not at all if some
    /// connection yielded with work left.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.yielded.is_empty() {
            return Some(Duration::ZERO);
        }
        let phase_deadline = match &self.phase {
            Phase::Serving(acceptor) => acceptor.retry_at(),
            Phase::Draining { until } => Some(*until),
        };
        [self.deadlines.next(), phase_deadline, self.lines.next_report()]
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
                Source::Listener(index) => {
                    if let Phase::Serving(acceptor) = &mut self.phase {
                        acceptor.on_listener_ready(index, now, &mut self.lines);
                    }
                }
                Source::Connection(key) => self.on_connection_ready(key, event, now),
                Source::Signals => {
                    if let Some(exit) = self.on_signals(now) {
                        return Some(exit);
                    }
                }
                Source::Waker => {
                    if let Some(signal) = self.stop_handle().exit_now_requested() {
                        info!("{} again: exiting now", signal_name(signal));
                        return Some(Exit::Signalled(signal));
                    }
                    // Without a stop request, a wake-up is a heartbeat
                    // request: this turn of the loop was the answer.
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
        // A connection that yielded is already due another turn after this
        // batch; a second turn now would undo the fairness of the budget.
        if client.yielded {
            debug!(
                "{}: {}: no turn now: it yielded, and resumes after this batch",
                client.connection.name(),
                describe_event(event)
            );
            return;
        }
        debug!(
            "{}: {}: {}",
            client.connection.name(),
            describe_event(event),
            what_a_turn_does(client.connection.state())
        );
        self.take_turn(key, now);
    }

    /// Gives connections that ran out of budget another turn.
    fn resume_yielded(&mut self, now: Instant) {
        for token in std::mem::take(&mut self.yielded) {
            let Some(key) = self.key_of(token) else {
                continue;
            };
            if let Some(client) = self.connections.get(key) {
                // No event will come for it: it stopped before WouldBlock,
                // and readiness is edge-triggered.
                trace!(
                    "{}: resuming, {}: its last turn used up its budget before WouldBlock",
                    client.connection.name(),
                    what_a_turn_does(client.connection.state())
                );
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
        // With --proxy-protocol, the per-ip limit applies to the client a
        // PROXY header names, so it is checked once the header has arrived:
        // the connection asks through `admission`, and a yes is charged
        // here, to be released when it closes.
        let per_address = &mut self.per_address;
        let mut charge = None;
        let mut admit = |client_ip| match per_address.charge(client_ip) {
            Ok(charged) => {
                charge = Some(charged);
                true
            }
            Err(_) => false,
        };
        let mut cx = context(
            &self.config,
            &self.stats,
            &mut self.scratch,
            now,
            self.observer.as_deref(),
        );
        if self.config.proxy_protocol {
            cx.admission = Some(&mut admit);
        }
        let (connection, stream) = client.parts();
        let turn = connection.on_ready(stream, &mut cx);
        if let Some(charged) = charge {
            client.charge = Some(charged);
        }
        client.yielded = turn == Turn::Yield;
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
        if let Err(e) = client.reregister(self.poll.registry(), interest, self.observer.as_deref()) {
            warn!(
                "{}: cannot change interest: {e}; closing it",
                client.connection.name()
            );
            let cx = context(&self.config, &self.stats, &mut [], now, self.observer.as_deref());
            client.connection.abandon(CloseReason::IoError, &cx);
            self.remove(key, now);
            return;
        }
        // Unchanged most of the time (same state, no progress): then the
        // set does nothing.
        self.deadlines
            .set(client.token, client.connection.deadline(&self.config));
    }

    /// Deregisters, unschedules, counts and closes one connection. If the
    /// server was at capacity, accepting becomes due: the accept step at the
    /// end of this loop iteration takes the next client, not this batch.
    fn remove(&mut self, key: usize, now: Instant) {
        let Some(mut client) = self.connections.try_remove(key) else {
            return;
        };
        client.deregister(self.observer.as_deref());
        self.deadlines.set(client.token, None);
        let name = client.connection.name();
        // What was charged is the peer: see `Charge`.
        if let (Some(charge), Some(peer)) = (client.charge.take(), name.peer) {
            self.per_address.discharge(charge, peer.ip());
        }
        // Every path closes the connection before removing it.
        let reason = client.connection.close_reason().unwrap_or(CloseReason::IoError);
        self.stats.closed(reason);
        match reason {
            CloseReason::Completed => debug!("{name}: closed"),
            // A client can provoke this at will: rate-limited, and past the
            // limit it still shows at debug.
            CloseReason::Oversize if self.lines.oversize.allow(now) => {
                warn!(
                    "{name}: closed: sent more than {}",
                    connection::bytes(self.config.max_message)
                );
            }
            CloseReason::PerIpLimit if self.lines.per_ip_limit.allow(now) => {
                let group = name.peer.map(|peer| AddressGroup::of(peer.ip()).to_string());
                warn!(
                    "{name}: closed: {} is already at the per-ip limit ({})",
                    group.as_deref().unwrap_or("its address"),
                    self.config.max_connections_per_ip
                );
            }
            CloseReason::ProxyError(fault) if self.lines.proxy_error.allow(now) => {
                warn!("{name}: closed: bad PROXY header: {fault}");
            }
            _ => debug!("{name}: closed: {reason}"),
        }
        observer::report(self.observer.as_deref(), || observer::Event::Closed {
            connection: name.id,
            reason,
            abortive: client.connection.closes_with_reset(),
        });
        client.close();
        if let Phase::Serving(acceptor) = &mut self.phase {
            acceptor.on_slot_freed();
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
            client.connection.on_deadline(&context(
                &self.config,
                &self.stats,
                &mut self.scratch,
                now,
                self.observer.as_deref(),
            ));
            self.settle(key, now);
        }
        self.end_grace_if_due(now);
        self.lines.report_due(now);
    }

    /// The accept step, last in each loop iteration: if accepting is due
    /// (a listener was ready, a slot freed, a back-off ended), take clients
    /// in while there is room.
    fn accept_step(&mut self, now: Instant) {
        let Phase::Serving(acceptor) = &mut self.phase else {
            return;
        };
        if let Some(mut step) = acceptor.begin(now) {
            self.take_in(&mut step, self.config.max_connections, now);
        }
    }

    /// Admits the clients of `step` while fewer than `limit` connections are
    /// held.
    fn take_in(&mut self, step: &mut Step, limit: usize, now: Instant) {
        loop {
            let room = self.connections.len() < limit;
            let Phase::Serving(acceptor) = &mut self.phase else {
                return;
            };
            let Some((stream, peer)) = acceptor.next(step, room, now, &mut self.lines, &self.stats) else {
                return;
            };
            self.admit(stream, peer, now);
        }
    }

    /// Takes in one accepted client: a slab slot, a token, READABLE interest.
    /// A client whose address already holds `max_connections_per_ip` is
    /// closed at once instead: dropping the stream sends end of stream, or
    /// a reset if its data had already arrived.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        self.stats.accepted();
        self.next_id += 1;
        let name = Name {
            id: self.next_id,
            peer: Some(peer.into()),
            via: None,
        };
        let Some(charge) = self.charge_at_accept(name, peer, now) else {
            return;
        };
        let entry = self.connections.vacant_entry();
        let token = token::connection(entry.key(), name.id);
        let connection = if self.config.proxy_protocol {
            Connection::behind_proxy(name, now)
        } else {
            Connection::new(name, now)
        };
        debug!("{name}: accepted");
        let registered = Client::register(
            self.poll.registry(),
            stream,
            token,
            connection,
            self.observer.as_deref(),
        );
        let mut client = match registered {
            Ok(client) => client,
            Err(e) => {
                warn!("{name}: cannot register with the poll: {e}; closing it");
                if let Some(charge) = charge {
                    self.per_address.discharge(charge, peer.ip());
                }
                self.stats.closed(CloseReason::IoError);
                return;
            }
        };
        client.charge = charge;
        self.deadlines
            .set(token, client.connection.deadline(&self.config));
        entry.insert(client);
    }

    /// What a client just accepted from `peer` counts against
    /// `max_connections_per_ip`: `Some(None)` when nothing is charged yet,
    /// `None` when it was refused (closed and counted here).
    ///
    /// Without `--proxy-protocol` the peer is the client, and is charged
    /// now. With it the peer is a load balancer, whose address every
    /// client shares, so nothing is charged until the PROXY header names
    /// the client (see `take_turn`); but a peer outside `--proxy-from` may
    /// not send a header at all, and is refused at once.
    fn charge_at_accept(&mut self, name: Name, peer: SocketAddr, now: Instant) -> Option<Option<Charge>> {
        if self.config.proxy_protocol {
            let trusted = self.config.proxy_from.is_empty()
                || self
                    .config
                    .proxy_from
                    .iter()
                    .any(|range| range.contains(peer.ip()));
            if trusted {
                return Some(None);
            }
            let fault = HeaderFault::UntrustedPeer;
            self.stats.closed(CloseReason::ProxyError(fault));
            if self.lines.proxy_error.allow(now) {
                warn!("{name}: closed at once: {fault}, so it may not send a PROXY header");
            } else {
                debug!("{name}: closed: {fault}");
            }
            return None;
        }
        match self.per_address.charge(peer.ip()) {
            Ok(charge) => Some(Some(charge)),
            Err(group) => {
                self.stats.per_ip_refused();
                if self.lines.per_ip_limit.allow(now) {
                    warn!(
                        "{name}: closed at once: {group} is already at the per-ip limit ({})",
                        self.config.max_connections_per_ip
                    );
                } else {
                    debug!("{name}: closed: per-ip limit");
                }
                None
            }
        }
    }

    /// Writes the reports of suppressed lines still pending (they would be
    /// lost otherwise), then the summary.
    fn log_summary(&mut self) {
        self.lines.report_all();
        if !self.is_worker {
            info!("summary: {}", self.stats.snapshot());
        }
    }
}

/// What a turn in `state` will do, for the line that says why the loop
/// gives a connection a turn.
fn what_a_turn_does(state: &State) -> &'static str {
    match state {
        State::ReadingProxyHeader { .. } => "reading the PROXY header",
        State::Receiving { .. } => "reading the message",
        State::Sending { .. } => "writing the rest of the reply",
        State::Lingering { .. } => "reading to discard until the client closes",
        State::Closed { .. } => "nothing: closed",
    }
}

/// `12µs`, `1.5ms`, `2.003s`: a sleep, as precise as a reader needs.
fn duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

/// `1 event`, `3 events`.
fn events_count(n: usize) -> String {
    if n == 1 {
        "1 event".into()
    } else {
        format!("{n} events")
    }
}

/// `1 connection`, `2 connections`.
fn connections_count(n: usize) -> String {
    if n == 1 {
        "1 connection".into()
    } else {
        format!("{n} connections")
    }
}

/// The line that starts a run. `max_connections` is the total, which for
/// workers is not any one server's share.
pub(crate) fn log_start(config: &Config, max_connections: usize) {
    info!(
        "serving: framing {}, max message {}, max connections {}",
        config.framing,
        connection::bytes(config.max_message),
        max_connections
    );
    if config.proxy_protocol {
        if config.proxy_from.is_empty() {
            warn!(
                "--proxy-protocol without --proxy-from: any peer may send a PROXY header \
                 and so claim any client address; name the load balancers with --proxy-from"
            );
        } else {
            let ranges: Vec<String> = config.proxy_from.iter().map(ToString::to_string).collect();
            info!("PROXY headers accepted from {}", ranges.join(", "));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_limit::WINDOW;

    #[test]
    fn a_pending_suppression_report_bounds_the_poll_timeout() {
        let mut server = Server::bind(Config {
            listen: vec!["127.0.0.1:0".into()],
            ..Config::default()
        })
        .expect("bind");
        let now = Instant::now();
        assert_eq!(server.poll_timeout(now), None, "idle: sleep until an event");
        // A flood of one kind of line: past the burst, lines are suppressed,
        // and their report must be written even if the server goes idle.
        while server.lines.per_ip_limit.allow(now) {}
        assert_eq!(server.poll_timeout(now), Some(WINDOW));
        server.lines.report_due(now + WINDOW);
        assert_eq!(server.poll_timeout(now), None, "reported: nothing pending");
    }
}

/// What an observer of a real server sees, over loopback.
#[cfg(test)]
mod observed {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::sync::Mutex;
    use std::sync::mpsc::{self, Sender};
    use std::thread;

    use super::*;
    use crate::Framing;
    use crate::connection::StateKind;
    use crate::observer::Event as Observed;

    /// Sends every event down a channel.
    struct Forward(Mutex<Sender<Observed>>);

    impl Observer for Forward {
        fn on_event(&self, event: &Observed) {
            if let Ok(sender) = self.0.lock() {
                let _ = sender.send(event.clone());
            }
        }
    }

    #[test]
    fn one_exchange_is_reported_from_registration_to_close() {
        let mut server = Server::bind(Config {
            listen: vec!["127.0.0.1:0".into()],
            framing: Framing::Eof,
            ..Config::default()
        })
        .expect("bind");
        let (sender, events) = mpsc::channel();
        server.set_observer(Forward(Mutex::new(sender)));
        let address = server.local_addrs()[0];
        let stop = server.stop_handle();
        let serving = thread::spawn(move || server.run());

        let patience = Some(Duration::from_secs(30));
        let mut client = TcpStream::connect(address).expect("connect");
        client.set_read_timeout(patience).expect("read timeout");
        client.write_all(b"Hello, world!").expect("send");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("reply");
        assert_eq!(reply, b"!dlrow ,olleH");
        // The reply's end of stream comes before the server frees the slot:
        // wait for the close event before stopping.
        let mut seen = Vec::new();
        while !matches!(seen.last(), Some(Observed::Closed { .. })) {
            seen.push(events.recv_timeout(Duration::from_secs(30)).expect("an event"));
        }
        stop.stop().expect("stop");
        assert_eq!(
            serving.join().expect("server thread").expect("run"),
            Exit::Finished
        );
        seen.extend(events.try_iter());

        let of_connection: Vec<&Observed> = seen
            .iter()
            .filter(|event| !matches!(event, Observed::Poll { .. }))
            .collect();
        assert_eq!(
            of_connection.first(),
            Some(&&Observed::Interest {
                connection: 1,
                from: None,
                to: Some(Interest::READABLE)
            }),
            "{seen:?}"
        );
        let read: usize = seen
            .iter()
            .map(|event| match event {
                Observed::Read { bytes, .. } => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(read, 13, "{seen:?}");
        assert!(
            seen.contains(&Observed::Wrote {
                connection: 1,
                written: 13,
                offered: 13
            }),
            "{seen:?}"
        );
        // The client had finished: no lingering after the reply.
        let states: Vec<(StateKind, StateKind)> = seen
            .iter()
            .filter_map(|event| match event {
                Observed::State { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            [
                (StateKind::Receiving, StateKind::Sending),
                (StateKind::Sending, StateKind::Closed)
            ]
        );
        let last_two = &of_connection[of_connection.len() - 2..];
        assert_eq!(
            last_two,
            [
                &Observed::Interest {
                    connection: 1,
                    from: Some(Interest::READABLE),
                    to: None
                },
                &Observed::Closed {
                    connection: 1,
                    reason: CloseReason::Completed,
                    abortive: false
                }
            ]
        );
        // Every wakeup is reported, the stop handle's last.
        let wakeups: Vec<WokeBy> = seen
            .iter()
            .filter_map(|event| match event {
                Observed::Poll { woke_by, .. } => Some(*woke_by),
                _ => None,
            })
            .collect();
        assert!(wakeups.len() >= 2, "{seen:?}");
        assert_eq!(wakeups.last(), Some(&WokeBy::Waker), "{seen:?}");
    }
}
