//! The `revecho` binary: parses the command line, sets up logging, raises the
//! descriptor limit, takes over the sockets systemd passed (socket
//! activation), and runs the library's `Workers` (one `Server` loop per
//! `--workers`, telling systemd when it is ready, that it is alive, and
//! when it stops), or runs the `send` client or the `bench` load generator.
//! On SIGUSR1 it prints the counters, summed over every worker, to stdout,
//! from a thread of its own.

#![forbid(unsafe_code)]

mod activation;
mod bench;
mod cli;
mod logging;
mod notify;
mod send;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use log::warn;
use revecho::{Exit, Stats, StatsSnapshot, Workers, describe_error, fd_limit};
use signal_hook::consts::SIGUSR1;
use signal_hook::iterator::Signals;

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
    // Before `listening on`: a script that sends SIGUSR1 as soon as it has
    // read the port must not meet the default action, which is to exit.
    if let Err(e) = print_stats_on_sigusr1(server.stats()) {
        warn!(
            "cannot watch SIGUSR1, so no counters on demand: {}",
            describe_error(&e)
        );
    }
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

/// On every SIGUSR1, prints one line of counters to stdout, whatever the log
/// level: `stats: open=2 accepted=7 replies=5 completed=5 ...`, the same
/// `key=value` pairs as the exit summary, with the connections open now
/// first. A thread of its own waits for the signal and reads the counters,
/// which any thread may read; the server's loops are not involved, and the
/// library never writes to stdout. With several workers the line is their
/// sum, like the exit summary.
fn print_stats_on_sigusr1(workers: Vec<Arc<Stats>>) -> io::Result<()> {
    let mut signals = Signals::new([SIGUSR1])?;
    thread::Builder::new()
        .name("stats-on-sigusr1".into())
        .spawn(move || {
            for _ in signals.forever() {
                let snapshot: StatsSnapshot = workers.iter().map(|stats| stats.snapshot()).sum();
                let mut stdout = io::stdout().lock();
                // Nobody to tell if stdout is gone; serving goes on.
                let _ = writeln!(stdout, "stats: open={} {snapshot}", snapshot.open);
                let _ = stdout.flush();
            }
        })?;
    Ok(())
}

/// Fatal errors are one plain line on stderr, not a log record.
fn fatal(error: &io::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
