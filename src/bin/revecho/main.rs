//! The `revecho` binary: parses the command line, sets up logging, raises the
//! descriptor limit, installs signal handling and runs the library's
//! `Server`, or runs the `send` client.

#![forbid(unsafe_code)]

mod bench;
mod cli;
mod logging;
mod send;

use std::io::{self, Write};
use std::process::ExitCode;

use log::warn;
use revecho::{Exit, Server, describe_error, fd_limit};

use crate::cli::{Cli, Command, ServerArgs};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match cli.command {
        Some(Command::Send(args)) => send::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => serve(&cli.server),
    }
}

fn serve(args: &ServerArgs) -> ExitCode {
    logging::init(args.verbose, args.quiet);
    let config = args.to_config();
    match fd_limit::raise_fd_limit(&config) {
        Ok(limit) if limit.is_short() => warn!(
            "open file limit is {} but --max-connections {} with --backlog {} may need {}; \
             accept will back off when descriptors run out",
            limit.soft, config.max_connections, config.backlog, limit.wanted
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot raise the open file limit: {}", describe_error(&e)),
    }
    let mut server = match Server::bind(config) {
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
    match server.run() {
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
