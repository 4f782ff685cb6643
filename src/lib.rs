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
//! server, [`Server`] to bind and run it, [`StopHandle`] to stop it from
//! another thread, [`Stats`] to watch it. [`fd_limit`] raises the descriptor
//! limit for a configuration, and [`deadlines`] is public so that its
//! benchmark can measure it. Everything else is private, but written to be
//! read.
//!
//! - `config`: [`Config`] and [`Framing`], the settings.
//! - `server`: [`Server`], the readiness loop: dispatch events, settle each
//!   connection's interest and deadline, fire timers; `server/accept.rs`
//!   takes clients in (the connection limit, the EMFILE back-off), and
//!   `server/shutdown.rs` stops (the stop handle, signals, the grace period).
//! - `connection`: one client's state machine (`Receiving`, `Sending`,
//!   `Lingering`, `Closed`), driven through a `Transport`.
//! - `transport`: the three socket calls a connection makes, so tests can
//!   script them.
//! - `framing`: where a message ends and how its reply is made (pure).
//! - [`deadlines`]: the nearest timeout, without a timer thread.
//! - `token`: how a `Token` names a listener or a connection, and why it
//!   carries a generation.
//! - `listeners`: binding with socket2 (backlog, `SO_REUSEADDR`, `IPV6_V6ONLY`).
//! - `stats`: [`Stats`], counters readable while the server runs.
//! - [`fd_limit`]: raising the descriptor limit at start.
//! - `log_limit`: rate-limiting the warnings a client can provoke.
//!
//! The `revecho` binary (`src/bin/revecho/`) adds the command line, logging
//! set-up, signal handling and the `send` client.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod deadlines;
pub mod fd_limit;
mod framing;
mod listeners;
mod log_limit;
mod proxy_protocol;
mod server;
pub mod stats;
mod token;
pub mod transport;

pub use config::{Config, Framing};
pub use connection::CloseReason;
pub use listeners::describe as describe_error;
pub use server::{ACCEPT_BACKOFF, Exit, Server, StopHandle};
pub use stats::{Stats, StatsSnapshot};
pub use token::MAX_CONNECTIONS;
pub use transport::Transport;
