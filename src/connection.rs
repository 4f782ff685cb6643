//! `Connection`: one client's life, as an explicit state machine.
//!
//! ```text
//!               message complete           reply flushed,
//!   accept ──► Receiving ──────────► Sending ───────────► Lingering ──► Closed
//!                 │                     │  shutdown(Write)    ▲  client EOF,
//!                 │ more than           │                     │  or linger over
//!                 │ max_message         └──► Closed, with a reset (RST), on
//!                 │                          a timeout, error or cut-off: the
//!                 │                          reply was only partly written
//!                 └───────────── shutdown(Write) ─────────────┘
//!   Receiving, Lingering ──► Closed (orderly) on a reset, an I/O error,
//!                            a timeout or a shutdown cut-off
//! ```
//!
//! With `--proxy-protocol` a connection starts one state earlier, in
//! `ReadingProxyHeader`: it reads the load balancer's PROXY header, learns
//! the real client's address from it, and hands the bytes that came after
//! the header to `Receiving` as already received (or, when they already
//! hold a whole line, goes straight to `Sending`). A malformed or missing
//! header closes the connection (`proxy_error`), as does a client over the
//! per-ip limit (`per_ip_limit`). The header logic lives in
//! `read_proxy_header`, so the receive path stays what it is without it.
//!
//! Every close is orderly (a FIN, after the lingering close where there is
//! one) except a close out of `Sending` with part of the reply unwritten:
//! that one is abortive, so the client cannot take the part for the whole.
//! [`TRANSITIONS`] lists every arrow above as `(state, event, state)`.
//!
//! The connection owns no socket. Each input is a method: [`on_ready`]
//! when the loop saw readiness, [`on_deadline`] when a timer fired,
//! [`cut_off`] when shutdown ran out of grace. Each runs the current
//! state's step through a [`Transport`]; a step returns what happens next
//! (wait, yield, or an [`Event`] and the next state), and one function,
//! `apply`, makes every change of state, checks it against [`TRANSITIONS`]
//! and logs `conn 3 (…): Receiving => Sending` at debug. The loop then asks
//! [`interest`] and [`deadline`] what to wait for next, and
//! [`closes_with_reset`] how to close. Because the transport is a trait,
//! the unit tests drive every state through a scripted fake stream.
//!
//! The rule for every socket call here is the non-blocking one: repeat the
//! call until the kernel says `WouldBlock`, because readiness is
//! edge-triggered (mio reports a change once, not a level over and over), and
//! treat every event as possibly spurious: a readable event may be followed
//! by `WouldBlock` at once.
//!
//! [`on_ready`]: Connection::on_ready
//! [`on_deadline`]: Connection::on_deadline
//! [`cut_off`]: Connection::cut_off
//! [`closes_with_reset`]: Connection::closes_with_reset
//! [`interest`]: Connection::interest
//! [`deadline`]: Connection::deadline

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::Interest;

use crate::Config;
use crate::Framing;
use crate::error::{interrupted, would_block};
use crate::framing::{self, Scan};
use crate::observer::{self, Observer, Operation};
use crate::stats::Stats;
use crate::transport::Transport;

/// Bytes one connection may move in one turn before it yields to the others.
///
/// Draining to `WouldBlock` is the rule, but a client on a fast link (say,
/// loopback) can keep a socket readable for as long as it likes. Without a
/// budget, one lingering client that sends without pause would hold the
/// single thread for all of its linger period. When the budget runs out the
/// connection returns [`Turn::Yield`] and the loop comes back to it after
/// serving the others.
pub(crate) const TURN_BUDGET: usize = 1024 * 1024;

/// `read` and `write` calls one connection may make in one turn before it
/// yields to the others.
///
/// Bytes alone do not bound a turn: with `--read-chunk 1` the byte budget
/// is a million system calls, long enough for every other client to notice.
/// 64 calls still drain an ordinary client in one turn (64 default-sized
/// chunks are a megabyte, the byte budget), while a client that floods a
/// server configured with tiny chunks holds the thread for at most 64 calls,
/// tens of microseconds, before the others get their turn.
pub(crate) const TURN_CALLS: usize = 64;

/// The largest scratch buffer a server needs for `config`: one read never
/// asks for more than `read_chunk`, nor for more than the turn's byte budget.
pub fn scratch_len(config: &Config) -> usize {
    config.read_chunk.clamp(1, TURN_BUDGET)
}

/// What a connection is doing.
#[derive(Debug)]
pub enum State {
    /// With `--proxy-protocol`: reading the PROXY header the load balancer
    /// sends before the client's bytes.
    ReadingProxyHeader {
        /// Bytes so far: the header, or a piece of it, and possibly the
        /// start of the message after it.
        received: Vec<u8>,
    },
    /// Reading the message. `received` holds what has arrived;
    /// `searched` is how much of it has been searched for a newline.
    Receiving {
        /// Bytes so far. Grows only by what arrived, so its capacity stays
        /// within about twice the bytes the client sent, whatever
        /// `read_chunk` is: reads land in the loop's scratch buffer first.
        /// Past 32 KiB it may move into a larger buffer that an earlier
        /// message left (`spare_buffers`), never one over what
        /// `max_message` allows.
        received: Vec<u8>,
        /// How far line framing has looked for `\n`.
        searched: usize,
    },
    /// Writing the reply. `written` bytes of `reply` are in the kernel.
    Sending {
        /// The reversed message.
        reply: Vec<u8>,
        /// How many bytes of `reply` the kernel has taken.
        written: usize,
        /// The client already sent end of stream, so there is nothing to
        /// linger for after the reply.
        peer_finished: bool,
    },
    /// Our write half is shut down; reading and discarding what the client
    /// still sends until it closes or `until` passes. Closing with unread
    /// data would make the kernel send a reset, and a reset can destroy a
    /// reply that the client has not read yet.
    Lingering {
        /// When to give up waiting for the client to close. Absolute:
        /// discarded bytes do not move it.
        until: Instant,
        /// Bytes thrown away so far.
        discarded: u64,
        /// What the connection did before lingering, which decides how it
        /// counts when it ends.
        ending: Ending,
    },
    /// Finished: the loop deregisters the socket and frees the slot.
    Closed {
        /// Why, as counted in [`Stats`].
        reason: CloseReason,
        /// The reply was cut off part-way, so the socket must be closed
        /// with a reset (SO_LINGER 0): an orderly FIN after a partial reply
        /// would let the client take the partial reply for a whole one.
        abortive: bool,
    },
}

/// The kind of a connection's state, without its data: what the
/// transition table talks about, and what an observer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// Reading the load balancer's PROXY header.
    ReadingProxyHeader,
    /// Reading the message.
    Receiving,
    /// Writing the reply.
    Sending,
    /// Write half shut down; reading and discarding until the client closes.
    Lingering,
    /// Finished: deregistered, its slot freed.
    Closed,
}

/// What makes a connection change state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole PROXY header arrived and named a client that may be served.
    HeaderRead,
    /// The PROXY header was malformed, or the peer closed before sending a
    /// whole one.
    BadHeader,
    /// The client the PROXY header names already holds
    /// `max_connections_per_ip` connections.
    ClientRefused,
    /// The whole message arrived (a line, a burst, or end of stream).
    MessageComplete,
    /// More than `max_message` bytes arrived without a complete message.
    MessageTooLong,
    /// The kernel took the last byte of the reply.
    ReplyWritten,
    /// A read returned end of stream while lingering.
    ClientClosed,
    /// The linger period ran out.
    LingerOver,
    /// The read timeout or the idle timeout passed.
    TimedOut,
    /// A read, write or shutdown failed.
    Failed,
    /// The loop gave up on the connection (shutdown cut-off, a failed
    /// re-registration).
    Abandoned,
}

/// Every state change a connection can make: `(from, event, to)`. The one
/// function that changes state checks each change against this table (in
/// debug builds), so the table, the diagram in the module docs and the code
/// cannot drift apart unnoticed.
pub const TRANSITIONS: &[(StateKind, Event, StateKind)] = {
    use Event::*;
    use StateKind::*;
    &[
        (ReadingProxyHeader, HeaderRead, Receiving),
        // The bytes after the header already hold a whole line.
        (ReadingProxyHeader, MessageComplete, Sending),
        // The header, or the line after it, is longer than max_message.
        (ReadingProxyHeader, MessageTooLong, Lingering),
        (ReadingProxyHeader, MessageTooLong, Closed),
        (ReadingProxyHeader, BadHeader, Closed),
        (ReadingProxyHeader, ClientRefused, Closed),
        (ReadingProxyHeader, TimedOut, Closed),
        (ReadingProxyHeader, Failed, Closed),
        (ReadingProxyHeader, Abandoned, Closed),
        (Receiving, MessageComplete, Sending),
        // Refused: shut down, then linger, or close at once with linger off.
        (Receiving, MessageTooLong, Lingering),
        (Receiving, MessageTooLong, Closed),
        (Receiving, TimedOut, Closed),
        (Receiving, Failed, Closed),
        (Receiving, Abandoned, Closed),
        // Replied: shut down, then linger, or close at once when the client
        // has already finished or linger is off.
        (Sending, ReplyWritten, Lingering),
        (Sending, ReplyWritten, Closed),
        (Sending, TimedOut, Closed),
        (Sending, Failed, Closed),
        (Sending, Abandoned, Closed),
        (Lingering, ClientClosed, Closed),
        (Lingering, LingerOver, Closed),
        (Lingering, Failed, Closed),
        (Lingering, Abandoned, Closed),
    ]
};

impl StateKind {
    /// The readiness a connection in this state waits for: interest follows
    /// state. `None` for `Closed`, whose socket is deregistered. The loop
    /// asks [`Connection::interest`], which answers from here, and the
    /// state diagram (`diagram`) prints it, so the two cannot differ.
    pub fn interest(self) -> Option<Interest> {
        match self {
            StateKind::ReadingProxyHeader | StateKind::Receiving | StateKind::Lingering => {
                Some(Interest::READABLE)
            }
            StateKind::Sending => Some(Interest::WRITABLE),
            StateKind::Closed => None,
        }
    }
}

impl State {
    /// The kind of state, without its data.
    pub fn kind(&self) -> StateKind {
        match self {
            State::ReadingProxyHeader { .. } => StateKind::ReadingProxyHeader,
            State::Receiving { .. } => StateKind::Receiving,
            State::Sending { .. } => StateKind::Sending,
            State::Lingering { .. } => StateKind::Lingering,
            State::Closed { .. } => StateKind::Closed,
        }
    }

    /// Part of a reply has gone out but not all of it.
    fn reply_unfinished(&self) -> bool {
        matches!(self, State::Sending { reply, written, .. } if *written < reply.len())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Closed {
                reason,
                abortive: false,
            } => write!(f, "Closed({reason})"),
            State::Closed {
                reason,
                abortive: true,
            } => write!(f, "Closed({reason}, reply cut off: reset)"),
            other => write!(f, "{:?}", other.kind()),
        }
    }
}

/// How a lingering connection got there, which decides how it counts when
/// it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// After a reply written in full.
    Replied,
    /// After refusing a message longer than `max_message`.
    Refused,
}

impl Ending {
    /// How a connection with this ending counts when it closes for
    /// `reason`. A refused client counts as oversize however it goes
    /// (closing, resetting, lingering too long): the refusal is what an
    /// operator wants to see counted.
    fn counted_as(self, reason: CloseReason) -> CloseReason {
        match self {
            Ending::Replied => reason,
            Ending::Refused => CloseReason::Oversize,
        }
    }

    /// The event that started the lingering close.
    fn event(self) -> Event {
        match self {
            Ending::Replied => Event::ReplyWritten,
            Ending::Refused => Event::MessageTooLong,
        }
    }
}

/// Why a connection ended. Every accepted connection ends in exactly one of
/// these, and each has its counter in [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The reply was delivered and the client closed (or lingering was off).
    Completed,
    /// The client sent more than `max_message`; it got no reply.
    Oversize,
    /// No byte moved for `idle_timeout`.
    IdleTimeout,
    /// The message had not arrived within `read_timeout` of accept.
    ReadTimeout,
    /// The client reset the connection.
    Reset,
    /// Another I/O error.
    IoError,
    /// The reply was delivered but the client had not closed when `linger` ran out.
    LingerTimeout,
    /// Still open when the shutdown grace period ended.
    ShutdownCutOff,
    /// With `--proxy-protocol`: the PROXY header was malformed or missing,
    /// or came from a peer outside `--proxy-from`.
    ProxyError(HeaderFault),
    /// With `--proxy-protocol`: the client the header names already held
    /// `max_connections_per_ip` connections.
    PerIpLimit,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Completed => "completed",
            CloseReason::Oversize => "oversize",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::ReadTimeout => "read timeout",
            CloseReason::Reset => "reset by peer",
            CloseReason::IoError => "I/O error",
            CloseReason::LingerTimeout => "linger timeout",
            CloseReason::ShutdownCutOff => "shutdown cut-off",
            CloseReason::ProxyError(fault) => return write!(f, "PROXY header error: {fault}"),
            CloseReason::PerIpLimit => "per-ip limit",
        })
    }
}

/// How a turn ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Nothing more can happen until the next readiness event or deadline.
    Wait,
    /// The turn's budget (bytes or calls) ran out while the socket may still
    /// be ready: call [`Connection::on_ready`] again soon, even without an
    /// event.
    Yield,
}

/// What every input needs besides the connection itself.
pub struct Context<'a> {
    /// The server's settings.
    pub config: &'a Config,
    /// Where to count bytes and replies.
    pub stats: &'a Stats,
    /// The time of this wakeup. One reading per wakeup is precise enough for
    /// second-scale timeouts and saves a clock call per socket call.
    pub now: Instant,
    /// Where reads land before their bytes are appended to a message (or
    /// thrown away while lingering). One buffer for the whole loop, of
    /// `scratch_len` bytes: a connection's own buffer then grows only by
    /// the bytes that arrived, and no byte of it is zeroed in advance.
    /// [`Connection::on_ready`] needs it non-empty; other inputs ignore it.
    pub scratch: &'a mut [u8],
    /// Who watches: reads, writes, `WouldBlock` and state changes are
    /// reported to it. `None` costs one branch per report.
    pub observer: Option<&'a dyn Observer>,
    /// Asked once a PROXY header has named the client: may this address be
    /// served? The loop answers from its per-ip counts, and counts the
    /// connection when it says yes. `None` admits every client.
    pub admission: Option<&'a mut dyn FnMut(IpAddr) -> bool>,
}

impl Context<'_> {
    /// Reports the event `event` builds, if anyone observes.
    #[inline]
    fn observe(&self, event: impl FnOnce() -> observer::Event) {
        observer::report(self.observer, event);
    }
}

/// How a connection appears in logs: `conn 3 (127.0.0.1:50312)`, or
/// behind a load balancer that sent a PROXY header,
/// `conn 3 (203.0.113.7:56324 via 127.0.0.1:40112)`.
#[derive(Clone, Copy, Debug)]
pub struct Name {
    /// Counts up from 1 over the server's life, so a log reader can follow
    /// one client even after its slab slot is reused.
    pub id: u64,
    /// The client's address, when known: the socket's peer, or the address
    /// a PROXY header named.
    pub peer: Option<Address>,
    /// The load balancer the client came through, when a PROXY header
    /// named a client other than the socket's peer.
    pub via: Option<Address>,
}

/// An address as a log line shows it: IP and port, in 20 bytes where a
/// `SocketAddr` takes 32 (it also carries IPv6's flow label and scope id,
/// which no log line shows). Every connection holds two in its [`Name`],
/// so this is most of what keeps an idle connection near 0.14 KiB
/// (docs/benchmarks.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    ip: IpAddr,
    port: u16,
}

impl Address {
    /// The IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for Address {
    fn from(address: SocketAddr) -> Address {
        Address {
            ip: address.ip(),
            port: address.port(),
        }
    }
}

impl From<Address> for SocketAddr {
    fn from(address: Address) -> SocketAddr {
        SocketAddr::new(address.ip, address.port)
    }
}

/// `127.0.0.1:50312`, `[::1]:50312`: as `SocketAddr` shows it.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::from(*self).fmt(f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.peer, self.via) {
            (Some(peer), Some(via)) => write!(f, "conn {} ({peer} via {via})", self.id),
            (Some(peer), None) => write!(f, "conn {} ({peer})", self.id),
            (None, _) => write!(f, "conn {}", self.id),
        }
    }
}

/// A byte count that reads right in a log line: `1 byte`, `2 bytes`.
pub(crate) struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 byte"),
            n => write!(f, "{n} bytes"),
        }
    }
}

pub(crate) fn bytes(n: impl TryInto<u64>) -> Bytes {
    Bytes(n.try_into().unwrap_or(u64::MAX))
}

/// One client connection's state and timing.
#[derive(Debug)]
pub struct Connection {
    name: Name,
    state: State,
    times: Times,
}

/// When the connection was accepted, and when a byte of the message or the
/// reply last moved. The second is kept as nanoseconds after the first, 8
/// bytes where an `Instant` takes 16: with ten thousand idle connections
/// every byte of a connection counts (docs/benchmarks.md, "Memory per idle
/// connection"). A `u64` of nanoseconds lasts 584 years.
#[derive(Clone, Copy, Debug)]
struct Times {
    accepted_at: Instant,
    last_progress_nanos: u64,
}

impl Times {
    fn new(now: Instant) -> Times {
        Times {
            accepted_at: now,
            last_progress_nanos: 0,
        }
    }

    /// A byte moved at `now`.
    fn progress(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.accepted_at).as_nanos();
        self.last_progress_nanos = u64::try_from(since).unwrap_or(u64::MAX);
    }

    fn last_progress(&self) -> Instant {
        self.accepted_at + Duration::from_nanos(self.last_progress_nanos)
    }
}

/// What one state's step found: stay, or move on. [`Connection::apply`]
/// is the one place that acts on a move.
enum Step {
    /// Blocked until the next event.
    Wait,
    /// Out of budget.
    Yield,
    /// `Event` happened: change to the next state, which may be able to
    /// work at once.
    Move(Event, Next),
}

/// The state to move to, with what only the step knows.
enum Next {
    Receiving { received: Vec<u8>, searched: usize },
    Sending { reply: Vec<u8>, peer_finished: bool },
    Lingering { until: Instant, ending: Ending },
    Closed(CloseReason),
}

/// What one turn may still spend.
struct Budget {
    bytes: usize,
    calls: usize,
}

impl Budget {
    fn new() -> Self {
        Budget {
            bytes: TURN_BUDGET,
            calls: TURN_CALLS,
        }
    }

    /// Whether another socket call fits; counts it if so.
    fn take_call(&mut self) -> bool {
        if self.bytes == 0 || self.calls == 0 {
            return false;
        }
        self.calls -= 1;
        true
    }
}

/// What the receive loop found.
enum Received {
    /// Line framing: the first `len` bytes are a line.
    Line {
        len: usize,
    },
    /// Burst framing: the readable event has been drained.
    Burst,
    /// The client shut down its write half.
    EndOfStream,
    Oversize,
    Failed(io::Error),
}

impl Connection {
    /// A connection just accepted at `now`.
    pub fn new(name: Name, now: Instant) -> Self {
        Connection {
            name,
            state: State::Receiving {
                received: Vec::new(),
                searched: 0,
            },
            times: Times::new(now),
        }
    }

    /// A connection just accepted at `now` from a load balancer that
    /// sends a PROXY header first (`--proxy-protocol`).
    pub fn behind_proxy(name: Name, now: Instant) -> Self {
        Connection {
            state: State::ReadingProxyHeader { received: Vec::new() },
            ..Connection::new(name, now)
        }
    }

    /// How this connection appears in logs.
    pub fn name(&self) -> Name {
        self.name
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state {
            State::Closed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Closed with a reply cut off part-way: the loop must close the socket
    /// with a reset (SO_LINGER 0), not the usual FIN, so that the client
    /// cannot mistake the partial reply for a whole one. This is what
    /// nginx's `reset_timedout_connection` does.
    pub fn closes_with_reset(&self) -> bool {
        matches!(self.state, State::Closed { abortive: true, .. })
    }

    /// The readiness to wait for: interest follows state. `None` once closed.
    pub fn interest(&self) -> Option<Interest> {
        self.state.kind().interest()
    }

    /// When this connection times out if nothing happens first.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let idle = config
            .idle_timeout
            .map(|timeout| self.times.last_progress() + timeout);
        match self.state {
            // The header counts towards the read timeout: both run from accept.
            State::ReadingProxyHeader { .. } | State::Receiving { .. } => {
                let read = config
                    .read_timeout
                    .map(|timeout| self.times.accepted_at + timeout);
                idle.into_iter().chain(read).min()
            }
            State::Sending { .. } => idle,
            State::Lingering { until, .. } => Some(until),
            State::Closed { .. } => None,
        }
    }

    /// The socket may be ready: do as much of the current state's work as
    /// the kernel allows without blocking, within the turn's budget of
    /// bytes and calls. A state that finishes hands over to the next one in
    /// the same turn (a complete message is written at once, without
    /// waiting for a writable event).
    pub fn on_ready(&mut self, io: &mut impl Transport, cx: &mut Context) -> Turn {
        // An empty scratch buffer would make every read look like end of stream.
        debug_assert!(!cx.scratch.is_empty(), "on_ready needs a scratch buffer");
        let mut budget = Budget::new();
        loop {
            let name = self.name;
            let step = match &mut self.state {
                State::ReadingProxyHeader { received } => {
                    read_proxy_header(&mut self.name, received, &mut self.times, io, cx, &mut budget)
                }
                State::Receiving { received, searched } => {
                    receive(name, received, searched, &mut self.times, io, cx, &mut budget)
                }
                State::Sending {
                    reply,
                    written,
                    peer_finished,
                } => send(
                    name,
                    reply,
                    written,
                    *peer_finished,
                    &mut self.times,
                    io,
                    cx,
                    &mut budget,
                ),
                State::Lingering {
                    discarded, ending, ..
                } => discard(name, discarded, *ending, io, cx, &mut budget),
                State::Closed { .. } => Step::Wait,
            };
            match step {
                Step::Wait => return Turn::Wait,
                Step::Yield => {
                    cx.stats.turn_yielded();
                    return Turn::Yield;
                }
                Step::Move(event, next) => self.apply(event, next, cx),
            }
        }
    }

    /// A timer fired: close the connection if its deadline has passed.
    /// Returns whether it closed. Timers can fire late or for a deadline
    /// that has since moved, so this checks rather than trusts.
    pub fn on_deadline(&mut self, cx: &Context) -> bool {
        match self.deadline(cx.config) {
            Some(deadline) if deadline <= cx.now => {}
            _ => return false,
        }
        let (event, reason) = match &self.state {
            State::ReadingProxyHeader { .. } | State::Receiving { .. } => {
                let read_expired = cx
                    .config
                    .read_timeout
                    .is_some_and(|timeout| self.times.accepted_at + timeout <= cx.now);
                if read_expired {
                    (Event::TimedOut, CloseReason::ReadTimeout)
                } else {
                    (Event::TimedOut, CloseReason::IdleTimeout)
                }
            }
            State::Sending { .. } => (Event::TimedOut, CloseReason::IdleTimeout),
            State::Lingering {
                discarded, ending, ..
            } => {
                debug!("{}: linger over, discarded {}", self.name, bytes(*discarded));
                (Event::LingerOver, ending.counted_as(CloseReason::LingerTimeout))
            }
            State::Closed { .. } => return false,
        };
        self.apply(event, Next::Closed(reason), cx);
        true
    }

    /// The shutdown grace period is over: close now, whatever the state.
    pub fn cut_off(&mut self, cx: &Context) {
        self.abandon(CloseReason::ShutdownCutOff, cx);
    }

    /// The loop gives up on this connection for `reason`: close now,
    /// whatever the state. Does nothing once closed.
    pub fn abandon(&mut self, reason: CloseReason, cx: &Context) {
        if !matches!(self.state, State::Closed { .. }) {
            self.apply(Event::Abandoned, Next::Closed(reason), cx);
        }
    }

    /// The one place that changes state. Every transition is in
    /// [`TRANSITIONS`], is logged, `conn 3 (…): Receiving => Sending`, at
    /// debug, and is reported to the observer. A close from `Sending` with
    /// part of the reply unwritten is marked abortive here, whatever caused
    /// it.
    fn apply(&mut self, event: Event, next: Next, cx: &Context) {
        let next = match next {
            Next::Receiving { received, searched } => State::Receiving { received, searched },
            Next::Sending { reply, peer_finished } => State::Sending {
                reply,
                written: 0,
                peer_finished,
            },
            Next::Lingering { until, ending } => State::Lingering {
                until,
                discarded: 0,
                ending,
            },
            Next::Closed(reason) => State::Closed {
                reason,
                abortive: self.state.reply_unfinished(),
            },
        };
        debug_assert!(
            TRANSITIONS.contains(&(self.state.kind(), event, next.kind())),
            "{:?} --{event:?}--> {:?} is not in TRANSITIONS",
            self.state.kind(),
            next.kind()
        );
        debug!("{}: {} => {}", self.name, self.state, next);
        cx.observe(|| observer::Event::State {
            connection: self.name.id,
            from: self.state.kind(),
            to: next.kind(),
        });
        #[cfg(test)]
        tests::record_transition((self.state.kind(), event, next.kind()));
        // The message or reply buffer of the state left behind, if large,
        // serves the next large message on this thread.
        if let State::Receiving { received: buffer, .. } | State::Sending { reply: buffer, .. } =
            std::mem::replace(&mut self.state, next)
        {
            spare_buffers::give_back(buffer);
        }
    }
}

/// How many bytes the next read of a message (or of the PROXY header
/// before it) asks for, with `buffered` bytes already held: one chunk,
/// within the turn's budget and the scratch buffer, and at most one byte
/// past `max_message`. Reading that one byte is how the connection learns
/// the client sent too much, without buffering more.
fn read_size(config: &Config, buffered: usize, budget: &Budget, scratch: usize) -> usize {
    let room = config.max_message.saturating_add(1).saturating_sub(buffered);
    config.read_chunk.min(room).min(budget.bytes).min(scratch)
}

/// Line framing found the first line's end at `len`: the bytes after it
/// are not part of the message, and are counted as discarded.
fn keep_first_line(name: Name, message: &mut Vec<u8>, len: usize, stats: &Stats) {
    let rest = message.len() - len;
    if rest > 0 {
        stats.bytes_discarded(rest);
        trace!(
            "{name}: {} after the line are not part of the message",
            bytes(rest)
        );
        message.truncate(len);
    }
}

/// Receiving: read until the message is complete or the kernel has no
/// more for now. Reads go into the loop's scratch buffer and only the bytes
/// that arrived are appended to `received`, so a client that sent two
/// bytes holds a buffer of a few bytes, not of `read_chunk`.
fn receive(
    name: Name,
    received: &mut Vec<u8>,
    searched: &mut usize,
    times: &mut Times,
    io: &mut impl Transport,
    cx: &mut Context,
    budget: &mut Budget,
) -> Step {
    let config = cx.config;
    let outcome = loop {
        if !budget.take_call() {
            return Step::Yield;
        }
        let want = read_size(config, received.len(), budget, cx.scratch.len());
        match io.read(&mut cx.scratch[..want]) {
            // 0 bytes from a non-empty buffer: the client shut down its
            // write half (the seed's `recv` returning b"").
            Ok(0) => {
                trace!("{name}: read: 0 bytes, end of stream");
                cx.observe(|| observer::Event::Read {
                    connection: name.id,
                    bytes: 0,
                });
                break Received::EndOfStream;
            }
            Ok(n) => {
                // Amortised growth: the capacity at most doubles past what
                // has arrived, or a large message moves into a buffer an
                // earlier one left (see `spare_buffers`).
                spare_buffers::append(received, &cx.scratch[..n]);
                budget.bytes -= n;
                cx.stats.bytes_in(n);
                times.progress(cx.now);
                trace!("{name}: read: {} ({} buffered)", bytes(n), received.len());
                cx.observe(|| observer::Event::Read {
                    connection: name.id,
                    bytes: n,
                });
                match framing::scan(config.framing, received, *searched, config.max_message) {
                    Scan::Complete { len } => break Received::Line { len },
                    Scan::Oversize => break Received::Oversize,
                    Scan::Incomplete => *searched = received.len(),
                }
            }
            // The kernel's receive buffer is empty. In burst framing
            // this is where the message ends; otherwise wait for more.
            Err(e) if would_block(&e) => {
                trace!("{name}: read: would block ({} buffered)", received.len());
                cx.observe(|| would_block_on(name, Operation::Read));
                if config.framing == Framing::Burst && !received.is_empty() {
                    break Received::Burst;
                }
                return Step::Wait;
            }
            // A signal arrived during the call; nothing was lost.
            Err(e) if interrupted(&e) => {
                trace!("{name}: read: interrupted, retrying");
            }
            Err(e) => break Received::Failed(e),
        }
    };
    let mut message = std::mem::take(received);
    let peer_finished = match outcome {
        Received::Line { len } => {
            keep_first_line(name, &mut message, len, cx.stats);
            false
        }
        Received::Burst => false,
        Received::EndOfStream => true,
        Received::Oversize => {
            debug!(
                "{name}: more than {} without a complete message",
                bytes(config.max_message)
            );
            spare_buffers::give_back(message);
            return shut_down_writing(name, io, cx, Ending::Refused, false);
        }
        Received::Failed(e) => return failed(failure(name, "read", &e)),
    };
    // Write at once (the next step): the send buffer almost always has
    // room, so waiting for a writable event first would only cost a trip
    // through poll.
    Step::Move(
        Event::MessageComplete,
        Next::Sending {
            reply: framing::into_reply(config.framing, message),
            peer_finished,
        },
    )
}

/// Sending: write until the whole reply is in the kernel or it has no room
/// for now. A partial write is normal on a non-blocking socket: the rest
/// waits for the next writable event.
#[allow(clippy::too_many_arguments)]
fn send(
    name: Name,
    reply: &[u8],
    written: &mut usize,
    peer_finished: bool,
    times: &mut Times,
    io: &mut impl Transport,
    cx: &Context,
    budget: &mut Budget,
) -> Step {
    let chunk = cx.config.write_chunk.unwrap_or(usize::MAX);
    while *written < reply.len() {
        if !budget.take_call() {
            return Step::Yield;
        }
        let offered = (reply.len() - *written).min(chunk).min(budget.bytes);
        match io.write(&reply[*written..*written + offered]) {
            Ok(0) => {
                let error = io::Error::new(ErrorKind::WriteZero, "write took no bytes");
                return failed(failure(name, "write", &error));
            }
            Ok(n) => {
                *written += n;
                budget.bytes -= n;
                cx.stats.bytes_out(n);
                times.progress(cx.now);
                let left = reply.len() - *written;
                cx.observe(|| observer::Event::Wrote {
                    connection: name.id,
                    written: n,
                    offered,
                });
                if n < offered {
                    cx.stats.partial_write();
                    trace!("{name}: write: partial, {n} of {} ({left} left)", bytes(offered));
                } else {
                    trace!("{name}: write: {} ({left} left)", bytes(n));
                }
            }
            // The send buffer is full: wait for a writable event.
            Err(e) if would_block(&e) => {
                trace!("{name}: write: would block ({} left)", reply.len() - *written);
                cx.observe(|| would_block_on(name, Operation::Write));
                return Step::Wait;
            }
            Err(e) if interrupted(&e) => {
                trace!("{name}: write: interrupted, retrying");
            }
            Err(e) => return failed(failure(name, "write", &e)),
        }
    }
    cx.stats.reply_completed();
    shut_down_writing(name, io, cx, Ending::Replied, peer_finished)
}

/// The first step of a lingering close: send our FIN, so the client sees
/// end of stream right after the reply (or the refusal), then linger unless
/// there is no need to.
fn shut_down_writing(
    name: Name,
    io: &mut impl Transport,
    cx: &Context,
    ending: Ending,
    peer_finished: bool,
) -> Step {
    if let Err(e) = io.shutdown_write() {
        return failed(ending.counted_as(failure(name, "shutdown", &e)));
    }
    trace!("{name}: shutdown(Write) done");
    if peer_finished || cx.config.linger.is_zero() {
        // The client has already closed its side, so nothing can arrive to
        // provoke a reset: close straight away.
        let reason = ending.counted_as(CloseReason::Completed);
        return Step::Move(ending.event(), Next::Closed(reason));
    }
    // Discard at once (the next step) whatever is already waiting.
    Step::Move(
        ending.event(),
        Next::Lingering {
            until: cx.now + cx.config.linger,
            ending,
        },
    )
}

/// Lingering: read and throw away until the client closes.
fn discard(
    name: Name,
    discarded: &mut u64,
    ending: Ending,
    io: &mut impl Transport,
    cx: &mut Context,
    budget: &mut Budget,
) -> Step {
    loop {
        if !budget.take_call() {
            return Step::Yield;
        }
        let want = cx.config.read_chunk.min(budget.bytes).min(cx.scratch.len());
        match io.read(&mut cx.scratch[..want]) {
            Ok(0) => {
                cx.observe(|| observer::Event::Read {
                    connection: name.id,
                    bytes: 0,
                });
                debug!(
                    "{name}: client closed; discarded {} while lingering",
                    bytes(*discarded)
                );
                let reason = ending.counted_as(CloseReason::Completed);
                return Step::Move(Event::ClientClosed, Next::Closed(reason));
            }
            // Deliberately no `last_progress` here: the linger deadline is
            // absolute, or a client could hold the slot forever by sending
            // a byte now and then.
            Ok(n) => {
                *discarded += n as u64;
                budget.bytes -= n;
                cx.stats.bytes_in(n);
                cx.stats.bytes_discarded(n);
                trace!("{name}: read: {} discarded", bytes(n));
                cx.observe(|| observer::Event::Read {
                    connection: name.id,
                    bytes: n,
                });
            }
            Err(e) if would_block(&e) => {
                trace!("{name}: read: would block (lingering)");
                cx.observe(|| would_block_on(name, Operation::Read));
                return Step::Wait;
            }
            Err(e) if interrupted(&e) => {
                trace!("{name}: read: interrupted, retrying");
            }
            Err(e) => return failed(ending.counted_as(failure(name, "read", &e))),
        }
    }
}

/// An I/O error ends this connection only: logs it and says how it counts.
fn failure(name: Name, operation: &str, error: &io::Error) -> CloseReason {
    debug!("{name}: {operation} failed: {error}");
    match error.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::NotConnected => CloseReason::Reset,
        _ => CloseReason::IoError,
    }
}

fn would_block_on(name: Name, operation: Operation) -> observer::Event {
    observer::Event::WouldBlock {
        connection: name.id,
        operation,
    }
}

fn failed(reason: CloseReason) -> Step {
    Step::Move(Event::Failed, Next::Closed(reason))
}

pub mod diagram;
#[cfg(test)]
mod properties;
mod proxy_header;
mod spare_buffers;
#[cfg(test)]
mod tests;

pub use proxy_header::HeaderFault;
use proxy_header::read_proxy_header;
