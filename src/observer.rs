//! [`Observer`]: the loop's events, as values, for a program that wants to
//! watch it without parsing log text.
//!
//! The log is for people; an observer is for programs: a test that asserts
//! "this connection met `WouldBlock` while writing", or the timeline drawn
//! by `examples/timeline.rs` (docs/timeline.svg). The server calls
//! [`Observer::on_event`] with one [`Event`] for each `poll` return, each
//! read and write a connection makes, each `WouldBlock`, each state change,
//! each change of registration and each close.
//!
//! Nobody observing costs nothing measurable: the server holds an
//! `Option<Box<dyn Observer>>`, and each place that could report an event
//! checks it with one branch before building the event. The connection
//! state machine owns no socket and no observer: it reports through its
//! `Context` (`src/connection.rs`), which is how the scripted-stream
//! unit tests watch it too.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use revecho::observer::{Event, Observer};
//!
//! /// Counts the writes that took less than they were offered.
//! #[derive(Default)]
//! struct PartialWrites(Arc<Mutex<u64>>);
//!
//! impl Observer for PartialWrites {
//!     fn on_event(&self, event: &Event) {
//!         if let Event::Wrote { written, offered, .. } = event
//!             && written < offered
//!             && let Ok(mut count) = self.0.lock()
//!         {
//!             *count += 1;
//!         }
//!     }
//! }
//!
//! let mut server = revecho::Server::bind(revecho::Config {
//!     listen: vec!["127.0.0.1:0".into()],
//!     ..revecho::Config::default()
//! })?;
//! server.set_observer(PartialWrites::default());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::time::Duration;

use mio::Interest;

pub use crate::connection::{CloseReason, StateKind};

/// Something that watches the loop. Set one with
/// [`Server::set_observer`](crate::Server::set_observer).
///
/// `on_event` runs on the loop's own thread, in the middle of its work, so
/// it should be quick: record the event and return. Like
/// [`log::Log::log`] it takes `&self`; an observer that keeps what it sees
/// holds it behind a `Mutex` or sends it down a channel, which is also how
/// another thread gets at it while the server runs.
pub trait Observer: Send {
    /// Called once for each event, in the order they happen.
    fn on_event(&self, event: &Event);
}

/// Which socket call met `WouldBlock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A `read`: the kernel's receive buffer was empty.
    Read,
    /// A `write`: the kernel's send buffer was full.
    Write,
}

/// Why `poll` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WokeBy {
    /// Readiness events (sockets, listeners or the signal pipe).
    Events,
    /// The [`StopHandle`](crate::StopHandle)'s waker (perhaps with other
    /// events in the same batch).
    Waker,
    /// No event: the timeout ran out (the nearest deadline, or at once
    /// because a connection yielded with work left).
    Timeout,
}

/// One thing the loop did. Connections are named by their id, the `N` of
/// `conn N` in the log, which counts up from 1 over the server's life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `poll` returned with `events` events after sleeping `slept`.
    Poll {
        /// How many events the batch holds.
        events: usize,
        /// How long the call took.
        slept: Duration,
        /// Why it returned.
        woke_by: WokeBy,
    },
    /// A `read` returned `bytes` bytes; 0 is end of stream.
    Read {
        /// The connection's id.
        connection: u64,
        /// Bytes read.
        bytes: usize,
    },
    /// A `write` took `written` of the `offered` bytes. Fewer than offered
    /// is a partial write.
    Wrote {
        /// The connection's id.
        connection: u64,
        /// Bytes the kernel took.
        written: usize,
        /// Bytes offered.
        offered: usize,
    },
    /// A socket call returned `WouldBlock`: the connection waits for the
    /// next readiness event.
    WouldBlock {
        /// The connection's id.
        connection: u64,
        /// The call that would have blocked.
        operation: Operation,
    },
    /// The connection's state changed.
    State {
        /// The connection's id.
        connection: u64,
        /// The state it left.
        from: StateKind,
        /// The state it entered.
        to: StateKind,
    },
    /// The connection's registration with the poll changed: `from: None` is
    /// the registration at accept, `to: None` the deregistration before the
    /// close.
    Interest {
        /// The connection's id.
        connection: u64,
        /// What it was registered for.
        from: Option<Interest>,
        /// What it is registered for now.
        to: Option<Interest>,
    },
    /// The socket was closed and the connection's slot freed.
    Closed {
        /// The connection's id.
        connection: u64,
        /// Why, as counted in [`Stats`](crate::Stats).
        reason: CloseReason,
        /// Closed with a reset (SO_LINGER 0) because the reply was cut off.
        abortive: bool,
    },
}

/// Reports `event` if there is an observer. `#[inline]`, so that without
/// one the cost is the branch: the event is not even built.
#[inline]
pub(crate) fn report(observer: Option<&dyn Observer>, event: impl FnOnce() -> Event) {
    if let Some(observer) = observer {
        deliver(observer, &event());
    }
}

/// The call itself, kept out of line and marked cold: the code that builds
/// and hands over an event then sits apart from the loop's own, and the
/// branch that skips it is predicted taken.
#[cold]
#[inline(never)]
fn deliver(observer: &dyn Observer, event: &Event) {
    observer.on_event(event);
}
