//! revecho: a TCP server that replies with the bytes it received, reversed,
//! then closes. A client sends `b"Hello, world!"` and reads back
//! `b"!dlrow ,olleH"`, then end of stream.
//!
//! It is written as a model of a non-blocking server: one thread, one mio
//! `Poll`, one explicit state machine per connection, every socket call
//! repeated until `WouldBlock`, and logs that show each readiness event,
//! short read and partial write.
//!
//! ```no_run
//! use revecho::{Config, Framing, Server};
//!
//! let config = Config {
//!     listen: vec!["127.0.0.1:0".into()],
//!     framing: Framing::Line,
//!     ..Config::default()
//! };
//! let mut server = Server::bind(config)?;
//! println!("listening on {}", server.local_addrs()[0]);
//! let stop = server.stop_handle(); // stop.stop() from another thread
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Layout
//!
//! The public API is small: [`Config`] and [`Framing`] to describe a
//! server, [`Server`] to bind (or adopt already-listening sockets, as
//! systemd passes them: [`Server::from_listeners`]) and run one loop,
//! [`Workers`] to run one loop per core on the same addresses,
//! [`StopHandle`] to stop either from another thread, [`Exit`] to say how
//! it ended, [`Stats`] and [`StatsSnapshot`] to watch it, [`Heartbeat`] to
//! tell a stuck loop from an idle one, an [`Observer`] to receive the loop's
//! events ([`observer`]). [`fd_limit`] raises the descriptor limit
//! for a configuration, and [`deadlines`] is public so that its benchmark
//! can measure it. Every other module is private, but written to be read.
//!
//! Benchmarks and fuzz targets that need an internal entry point get it
//! deliberately, from one place: the `#[doc(hidden)]` module `internals`,
//! which exposes the connection state machine (`Connection`, `Context`,
//! `Name`, `Turn`, `CloseReason`), the `Transport` it drives (so a target
//! can script one), framing's `scan` and `into_reply`, the state diagram
//! written from the transition table (`diagram`, for the test that keeps
//! `docs/state-machine.md` true), and `fuzz`, the bodies of the fuzz
//! targets in `fuzz/` (`src/fuzz_entry.rs`). It is not part of the
//! supported API and may change with any release.
//!
//! ```compile_fail
//! // The modules themselves are private:
//! use revecho::connection::Connection;
//! ```
//!
//! ```
//! // The deliberate way in, for a benchmark or a fuzz target:
//! use revecho::internals::{Connection, Transport, scan};
//! ```
//!
//! - `config`: [`Config`] and [`Framing`], the settings.
//! - `server`: [`Server`], the readiness loop: poll, dispatch events,
//!   resume yielded connections, fire timers, accept. Beside it,
//!   `server/acceptor.rs` owns the listeners and decides when and from
//!   which listener to accept (the connection limit, the EMFILE back-off,
//!   rotation between listeners); `server/client.rs` owns a client's
//!   registration with the poll; `server/per_ip.rs` counts connections per
//!   address; `server/shutdown.rs` stops (the stop handle, signals, the
//!   grace period).
//! - `workers`: [`Workers`], N servers on N threads bound with
//!   `SO_REUSEPORT` (or sharing passed sockets), a coordinator that owns
//!   the signals, and one summed summary.
//! - `connection`: one client's state machine (`Receiving`, `Sending`,
//!   `Lingering`, `Closed`, and before them, with `--proxy-protocol`,
//!   `ReadingProxyHeader` in `connection/proxy_header.rs`), driven through
//!   a `Transport`.
//! - `proxy_protocol`: the PROXY protocol v1/v2 header parser (sans-IO,
//!   reachable for fuzzing as `internals::parse_proxy_header`), and
//!   `proxy_protocol/cidr.rs`, the [`Cidr`] ranges of `--proxy-from`.
//! - `transport`: the three socket calls a connection makes, so tests can
//!   script them.
//! - `framing`: where a message ends and how its reply is made (pure).
//! - `fuzz_entry`: the bodies of the fuzz targets, and the scripted harness
//!   and model that the connection's property tests share with them.
//! - [`deadlines`]: the nearest timeout, without a timer thread.
//! - `token`: how a `Token` names a listener or a connection, and why it
//!   carries a generation.
//! - `listeners`: binding with socket2 (backlog, `SO_REUSEADDR`,
//!   `IPV6_V6ONLY`, `SO_REUSEPORT` for workers), and adopting sockets bound
//!   elsewhere.
//! - `error`: names for `WouldBlock` and `Interrupted`, and one-line error
//!   text.
//! - `stats`: [`Stats`], counters readable while the server runs.
//! - [`fd_limit`]: raising the descriptor limit at start.
//! - `log_limit`: one rate limit per kind of log line a client can cause.
//! - [`observer`]: the loop's events as values, for programs (tests, the
//!   timeline example) that watch it.
//!
//! The `revecho` binary (`src/bin/revecho/`) adds the command line, logging
//! set-up, socket activation, systemd notifications (the watchdog among
//! them) and the `send` client.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod connection;
pub mod deadlines;
mod error;
pub mod fd_limit;
mod framing;
mod fuzz_entry;
mod listeners;
mod log_limit;
pub mod observer;
mod proxy_protocol;
mod server;
mod stats;
mod token;
mod transport;
mod workers;

pub use config::{Config, Framing};
pub use error::describe as describe_error;
pub use observer::Observer;
pub use proxy_protocol::cidr::{Cidr, CidrError};
pub use server::{ACCEPT_BACKOFF, Exit, Server, StopHandle};
pub use stats::{Stats, StatsSnapshot};
pub use token::MAX_CONNECTIONS;
pub use workers::{Heartbeat, Workers};

/// Internal entry points for benchmarks and fuzz targets: the connection
/// state machine, a scriptable [`Transport`](internals::Transport) and the
/// framing scan. Not a supported API; see the Layout section above.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod internals {
    pub use crate::connection::diagram;
    pub use crate::connection::{CloseReason, Connection, Context, Name, Turn};
    pub use crate::framing::{Scan, into_reply, scan};
    pub use crate::proxy_protocol::{Command, Malformed, Parse, parse as parse_proxy_header};
    pub use crate::transport::Transport;

    /// The fuzz targets' bodies, replayed by `tests/fuzz_corpus.rs`.
    pub mod fuzz {
        pub use crate::fuzz_entry::*;
    }
}
