//! The `revecho` binary: parses the command line, sets up logging, raises the
//! descriptor limit, takes over the sockets systemd passed (socket
//! activation), and runs the library's `Workers` (one `Server` loop per
//! `--workers`, telling systemd when it is ready, that it is alive, and
//! when it stops), or runs the `send` client.

#![forbid(unsafe_code)]

mod activation;
mod cli;
mod logging;
mod notify;
mod send;

use std::io::{self, Write};
use std::process::ExitCode;

use log::warn;
use revecho::{Exit, Workers, describe_error, fd_limit};

use crate::cli::{Cli, Command, ServerArgs};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match cli.command {
        Some(Command::Send(args)) => send::run(args),
        None => serve(&cli.server),
    }
}

fn serve(args: &ServerArgs) -> ExitCode {
    // Before anything is bound or raised: a usage error, status 2.
    args.check_combination();
    // Before any thread starts: listenfd removes LISTEN_FDS and LISTEN_PID
    // from the environment, so that a child process cannot mistake our
    // sockets for its own.
    let inherited = match activation::inherited_listeners(args) {
        Ok(inherited) => inherited,
        Err(e) => return fatal(&e),
    };
    logging::init(args.verbose, args.quiet);
    let config = args.to_config();
    let workers = args.workers.resolve();
    match fd_limit::raise_fd_limit_for_workers(&config, workers) {
        Ok(limit) if limit.is_short() => warn!(
            "open file limit is {} but --max-connections {} with --backlog {} may need {}; \
             accept will back off when descriptors run out",
            limit.soft, config.max_connections, config.backlog, limit.wanted
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot raise the open file limit: {}", describe_error(&e)),
    }
    let bound = match inherited {
        Some(listeners) => Workers::from_listeners(config, workers, listeners),
        None => Workers::bind(config, workers),
    };
    let mut server = match bound {
        Ok(server) => server,
        Err(e) => return fatal(&e),
    };
    // On stdout and whatever the log level, so scripts can learn the port.
    let mut stdout = io::stdout().lock();
    for address in server.local_addrs() {
        let _ = writeln!(stdout, "listening on {address}");
    }
    let _ = stdout.flush();
    drop(stdout);
    let systemd = notify::Systemd::from_environment();
    let on_shutdown = systemd.clone();
    server.on_shutdown(move || on_shutdown.stopping());
    let watchdog = systemd.start_watchdog(server.heartbeat());
    systemd.ready();
    let result = server.run();
    drop(watchdog);
    // Sent already when shutdown began; this covers a loop that failed.
    systemd.stopping();
    match result {
        Ok(Exit::Finished) => ExitCode::SUCCESS,
        Ok(Exit::Signalled(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        Err(e) => fatal(&e),
    }
}

/// Fatal errors are one plain line on stderr, not a log record.
fn fatal(error: &io::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
