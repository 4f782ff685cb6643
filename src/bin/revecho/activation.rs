//! systemd socket activation: serving the listening sockets systemd binds
//! and passes (descriptors 3, 4, … named by `LISTEN_FDS` for the process
//! `LISTEN_PID`), instead of binding our own.
//!
//! The listenfd crate reads the variables, checks that each descriptor is a
//! TCP socket and takes ownership of it, which would otherwise need
//! `unsafe` `FromRawFd` code of our own. The sockets come blocking; the
//! library's `from_listeners` makes them non-blocking before the loop sees
//! them.
//!
//! Inherited sockets win over the default address. Beside an explicit
//! `--listen` (or `REVECHO_LISTEN`) they are a usage error: one of the two
//! would be silently ignored. `--backlog` does not apply to them: systemd
//! called `listen` (the socket unit's `Backlog=`).

use std::io;
use std::net::TcpListener;

use clap::CommandFactory;
use listenfd::ListenFd;

use crate::cli::{Cli, ServerArgs};

/// The listening sockets passed by systemd, or `None` when there are none.
/// Exits with a usage error (status 2) when `--listen` was given too.
pub fn inherited_listeners(args: &ServerArgs) -> io::Result<Option<Vec<TcpListener>>> {
    let mut passed = ListenFd::from_env();
    if passed.len() == 0 {
        return Ok(None);
    }
    if args.listen_given {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--listen (or REVECHO_LISTEN) cannot be used with sockets passed by systemd \
                     (LISTEN_FDS={}): the inherited sockets are served",
                    passed.len()
                ),
            )
            .exit();
    }
    let mut listeners = Vec::with_capacity(passed.len());
    for index in 0..passed.len() {
        // Descriptors start at 3, after stdin, stdout and stderr.
        let descriptor = index + 3;
        match passed.take_tcp_listener(index) {
            Ok(Some(listener)) => listeners.push(listener),
            Ok(None) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("inherited socket {descriptor} (LISTEN_FDS): {e}"),
                ));
            }
        }
    }
    Ok(Some(listeners))
}
