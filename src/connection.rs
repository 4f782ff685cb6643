//! `Connection`: one client's life, as an explicit state machine.
//!
//! ```text
//!               message complete           reply flushed,
//!   accept ──► Receiving ──────────► Sending ───────────► Lingering ──► Closed
//!                 │                        shutdown(Write)     ▲  client EOF,
//!                 │ more than max_message                     │  or linger over
//!                 └───────────── shutdown(Write) ──────────────┘
//!   any state ──► Closed on a reset, an I/O error, a timeout or a shutdown cut-off
//! ```
//!
//! The connection owns no socket. Each input is a method: [`on_ready`]
//! when the loop saw readiness, [`on_deadline`] when a timer fired,
//! [`cut_off`] when shutdown ran out of grace. Each does the current state's
//! work through a [`Transport`] and may move to the next state; every move
//! goes through `set_state`, which logs `conn 3 (…): Receiving => Sending`
//! at debug. The loop then asks [`interest`] and [`deadline`] what to wait
//! for next. Because the transport is a trait, the unit tests drive every
//! state through a scripted fake stream.
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
//! [`interest`]: Connection::interest
//! [`deadline`]: Connection::deadline

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, trace};
use mio::Interest;

use crate::Config;
use crate::Framing;
use crate::framing::{self, Scan};
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

/// What a connection is doing.
#[derive(Debug)]
pub enum State {
    /// Reading the message. `received` holds what has arrived;
    /// `searched` is how much of it has been searched for a newline.
    Receiving {
        /// Bytes so far.
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
        /// How the connection counts when lingering ends normally:
        /// `Completed` after a reply, `Oversize` after a refusal.
        ending: CloseReason,
    },
    /// Finished: the loop deregisters the socket and frees the slot.
    Closed(CloseReason),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Receiving { .. } => "Receiving",
            State::Sending { .. } => "Sending",
            State::Lingering { .. } => "Lingering",
            State::Closed(_) => "Closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Closed(reason) => write!(f, "Closed({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

/// Why a connection ended.
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
        })
    }
}

/// How a turn ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Nothing more can happen until the next readiness event or deadline.
    Wait,
    /// The turn's byte budget ran out while the socket may still be ready:
    /// call [`Connection::on_ready`] again soon, even without an event.
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
}

/// How a connection appears in logs: `conn 3 (127.0.0.1:50312)`.
#[derive(Clone, Copy, Debug)]
pub struct Name {
    /// Counts up from 1 over the server's life, so a log reader can follow
    /// one client even after its slab slot is reused.
    pub id: u64,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(peer) => write!(f, "conn {} ({peer})", self.id),
            None => write!(f, "conn {}", self.id),
        }
    }
}

/// One client connection's state and timing.
#[derive(Debug)]
pub struct Connection {
    name: Name,
    state: State,
    accepted_at: Instant,
    /// The last time a byte of the message or the reply moved.
    last_progress: Instant,
}

/// The outcome of one step inside a turn.
enum Step {
    /// The state changed and the new state can work at once.
    Continue,
    /// Blocked until the next event (or finished).
    Wait,
    /// Out of budget.
    Yield,
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
            accepted_at: now,
            last_progress: now,
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
            State::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// The readiness to wait for: interest follows state. `None` once closed.
    pub fn interest(&self) -> Option<Interest> {
        match self.state {
            State::Receiving { .. } | State::Lingering { .. } => Some(Interest::READABLE),
            State::Sending { .. } => Some(Interest::WRITABLE),
            State::Closed(_) => None,
        }
    }

    /// When this connection times out if nothing happens first.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let idle = config.idle_timeout.map(|timeout| self.last_progress + timeout);
        match self.state {
            State::Receiving { .. } => {
                let read = config.read_timeout.map(|timeout| self.accepted_at + timeout);
                idle.into_iter().chain(read).min()
            }
            State::Sending { .. } => idle,
            State::Lingering { until, .. } => Some(until),
            State::Closed(_) => None,
        }
    }

    /// The socket may be ready: do as much of the current state's work as
    /// the kernel allows without blocking. A state that finishes hands over
    /// to the next one in the same turn (a complete message is written at
    /// once, without waiting for a writable event).
    pub fn on_ready(&mut self, io: &mut impl Transport, cx: &Context) -> Turn {
        let mut budget = TURN_BUDGET;
        loop {
            let step = match self.state {
                State::Receiving { .. } => self.receive(io, cx, &mut budget),
                State::Sending { .. } => self.send(io, cx, &mut budget),
                State::Lingering { .. } => self.discard(io, cx, &mut budget),
                State::Closed(_) => Step::Wait,
            };
            match step {
                Step::Continue => {}
                Step::Wait => return Turn::Wait,
                Step::Yield => return Turn::Yield,
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
        let reason = match &self.state {
            State::Receiving { .. } => {
                let read_expired = cx
                    .config
                    .read_timeout
                    .is_some_and(|timeout| self.accepted_at + timeout <= cx.now);
                if read_expired {
                    CloseReason::ReadTimeout
                } else {
                    CloseReason::IdleTimeout
                }
            }
            State::Sending { .. } => CloseReason::IdleTimeout,
            State::Lingering {
                discarded, ending, ..
            } => {
                debug!("{}: linger over, discarded {discarded} bytes", self.name);
                match ending {
                    CloseReason::Completed => CloseReason::LingerTimeout,
                    other => *other,
                }
            }
            State::Closed(_) => return false,
        };
        self.set_state(State::Closed(reason));
        true
    }

    /// The shutdown grace period is over: close now, whatever the state.
    pub fn cut_off(&mut self) {
        self.abandon(CloseReason::ShutdownCutOff);
    }

    /// The loop gives up on this connection for `reason`: close now,
    /// whatever the state. Does nothing once closed.
    pub fn abandon(&mut self, reason: CloseReason) {
        if !matches!(self.state, State::Closed(_)) {
            self.set_state(State::Closed(reason));
        }
    }

    /// Every transition passes through here, so the debug log shows them all.
    fn set_state(&mut self, next: State) {
        debug!("{}: {} => {}", self.name, self.state, next);
        self.state = next;
    }

    /// Receiving: read until the message is complete or the kernel has no
    /// more for now.
    fn receive(&mut self, io: &mut impl Transport, cx: &Context, budget: &mut usize) -> Step {
        let name = self.name;
        let config = cx.config;
        let State::Receiving { received, searched } = &mut self.state else {
            return Step::Continue;
        };
        let outcome = loop {
            if *budget == 0 {
                return Step::Yield;
            }
            // Ask for at most one byte past the limit: reading that byte is
            // how we learn the client sent too much, without buffering more.
            let room = config
                .max_message
                .saturating_add(1)
                .saturating_sub(received.len());
            let want = config.read_chunk.min(room).min(*budget);
            let start = received.len();
            received.resize(start + want, 0);
            let result = io.read(&mut received[start..]);
            received.truncate(start + result.as_ref().map_or(0, |&n| n));
            match result {
                // 0 bytes from a non-empty buffer: the client shut down its
                // write half (the seed's `recv` returning b"").
                Ok(0) => {
                    trace!("{name}: read: 0 bytes, end of stream");
                    break Received::EndOfStream;
                }
                Ok(n) => {
                    *budget -= n;
                    cx.stats.bytes_in(n);
                    self.last_progress = cx.now;
                    trace!("{name}: read: {n} bytes ({} buffered)", received.len());
                    match framing::scan(config.framing, received, *searched, config.max_message) {
                        Scan::Complete { len } => break Received::Line { len },
                        Scan::Oversize => break Received::Oversize,
                        Scan::Incomplete => *searched = received.len(),
                    }
                }
                // The kernel's receive buffer is empty. In burst framing
                // this is where the message ends; otherwise wait for more.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trace!("{name}: read: would block ({} buffered)", received.len());
                    if config.framing == Framing::Burst && !received.is_empty() {
                        break Received::Burst;
                    }
                    return Step::Wait;
                }
                // A signal arrived during the call; nothing was lost.
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    trace!("{name}: read: interrupted, retrying");
                }
                Err(e) => break Received::Failed(e),
            }
        };
        let mut message = std::mem::take(received);
        match outcome {
            Received::Line { len } => {
                let rest = message.len() - len;
                if rest > 0 {
                    // Bytes after the first line are not part of the message.
                    cx.stats.bytes_discarded(rest);
                    trace!("{name}: {rest} bytes after the line are not part of the message");
                    message.truncate(len);
                }
                self.start_reply(message, false, cx)
            }
            Received::Burst => self.start_reply(message, false, cx),
            Received::EndOfStream => self.start_reply(message, true, cx),
            Received::Oversize => {
                debug!(
                    "{name}: more than {} bytes without a complete message",
                    config.max_message
                );
                self.shut_down_writing(io, cx, false, CloseReason::Oversize)
            }
            Received::Failed(e) => self.fail("read", e),
        }
    }

    fn start_reply(&mut self, message: Vec<u8>, peer_finished: bool, cx: &Context) -> Step {
        let reply = framing::into_reply(cx.config.framing, message);
        self.set_state(State::Sending {
            reply,
            written: 0,
            peer_finished,
        });
        // Write at once: the send buffer almost always has room, so waiting
        // for a writable event first would only cost a trip through poll.
        Step::Continue
    }

    /// Sending: write until the whole reply is in the kernel or it has no
    /// room for now. A partial write is normal on a non-blocking socket: the
    /// rest waits for the next writable event.
    fn send(&mut self, io: &mut impl Transport, cx: &Context, budget: &mut usize) -> Step {
        let name = self.name;
        let chunk = cx.config.write_chunk.unwrap_or(usize::MAX);
        let State::Sending {
            reply,
            written,
            peer_finished,
        } = &mut self.state
        else {
            return Step::Continue;
        };
        while *written < reply.len() {
            if *budget == 0 {
                return Step::Yield;
            }
            let offered = (reply.len() - *written).min(chunk).min(*budget);
            match io.write(&reply[*written..*written + offered]) {
                Ok(0) => {
                    let error = io::Error::new(ErrorKind::WriteZero, "write took no bytes");
                    return self.fail("write", error);
                }
                Ok(n) => {
                    *written += n;
                    *budget -= n;
                    cx.stats.bytes_out(n);
                    self.last_progress = cx.now;
                    let left = reply.len() - *written;
                    if n < offered {
                        cx.stats.partial_write();
                        trace!("{name}: write: partial, {n} of {offered} bytes ({left} left)");
                    } else {
                        trace!("{name}: write: {n} bytes ({left} left)");
                    }
                }
                // The send buffer is full: wait for a writable event.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trace!("{name}: write: would block ({} left)", reply.len() - *written);
                    return Step::Wait;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    trace!("{name}: write: interrupted, retrying");
                }
                Err(e) => return self.fail("write", e),
            }
        }
        cx.stats.reply_completed();
        let peer_finished = *peer_finished;
        self.shut_down_writing(io, cx, peer_finished, CloseReason::Completed)
    }

    /// The first step of a lingering close: send our FIN, so the client sees
    /// end of stream right after the reply, then linger unless there is no
    /// need to.
    fn shut_down_writing(
        &mut self,
        io: &mut impl Transport,
        cx: &Context,
        peer_finished: bool,
        ending: CloseReason,
    ) -> Step {
        if let Err(e) = io.shutdown_write() {
            // A refused client that already reset still counts as refused,
            // as it does when the reset shows up while lingering.
            if ending == CloseReason::Oversize {
                debug!("{}: shutdown failed: {e}", self.name);
                self.set_state(State::Closed(CloseReason::Oversize));
                return Step::Wait;
            }
            return self.fail("shutdown", e);
        }
        trace!("{}: shutdown(Write) done", self.name);
        if peer_finished || cx.config.linger.is_zero() {
            // The client has already closed its side, so nothing can
            // arrive to provoke a reset: close straight away.
            self.set_state(State::Closed(ending));
            return Step::Wait;
        }
        let until = cx.now + cx.config.linger;
        self.set_state(State::Lingering {
            until,
            discarded: 0,
            ending,
        });
        // Discard at once whatever is already waiting.
        Step::Continue
    }

    /// Lingering: read and throw away until the client closes.
    fn discard(&mut self, io: &mut impl Transport, cx: &Context, budget: &mut usize) -> Step {
        let name = self.name;
        let State::Lingering {
            discarded, ending, ..
        } = &mut self.state
        else {
            return Step::Continue;
        };
        let mut scratch = [0u8; 4096];
        let chunk = cx.config.read_chunk.min(scratch.len());
        loop {
            if *budget == 0 {
                return Step::Yield;
            }
            match io.read(&mut scratch[..chunk.min(*budget)]) {
                Ok(0) => {
                    debug!("{name}: client closed; discarded {discarded} bytes while lingering");
                    let ending = *ending;
                    self.set_state(State::Closed(ending));
                    return Step::Wait;
                }
                // Deliberately no `last_progress` here: the linger deadline
                // is absolute, or a client could hold the slot forever by
                // sending a byte now and then.
                Ok(n) => {
                    *discarded += n as u64;
                    *budget -= n;
                    cx.stats.bytes_in(n);
                    cx.stats.bytes_discarded(n);
                    trace!("{name}: read: {n} bytes discarded");
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trace!("{name}: read: would block (lingering)");
                    return Step::Wait;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    trace!("{name}: read: interrupted, retrying");
                }
                // A refused client that resets still counts as refused.
                Err(e) if *ending == CloseReason::Oversize => {
                    debug!("{name}: read while lingering failed: {e}");
                    self.set_state(State::Closed(CloseReason::Oversize));
                    return Step::Wait;
                }
                Err(e) => return self.fail("read", e),
            }
        }
    }

    /// An I/O error ends this connection only.
    fn fail(&mut self, operation: &str, error: io::Error) -> Step {
        debug!("{}: {operation} failed: {error}", self.name);
        let reason = match error.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::NotConnected => CloseReason::Reset,
            _ => CloseReason::IoError,
        };
        self.set_state(State::Closed(reason));
        Step::Wait
    }
}

#[cfg(test)]
mod tests;
