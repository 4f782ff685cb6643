//! `revecho bench`: a load generator for revecho and its peers.
//!
//! A closed-loop client on one thread and one mio `Poll`: `--concurrency`
//! connections are in flight, and each one that ends is replaced at once
//! (or, with `--rate`, new ones start on a fixed schedule). Every reply is
//! checked byte for byte. The run is bounded by `--duration` or
//! `--requests`, and each connection by `--timeout`.
//!
//! Layout:
//! - `args`: the options;
//! - `exchange`: the request and expected reply, computed once;
//! - `slot`: one connection's state machine, with its reused buffer;
//! - `driver`: the loop that runs the slots;
//! - `idle`: `--idle K --hold D`, connections that send nothing;
//! - `tally`, `cpu`, `progress`, `report`: what is counted and shown.

mod args;
mod cpu;
mod driver;
mod exchange;
mod idle;
mod progress;
mod report;
mod slot;
mod tally;

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use revecho::describe_error;

pub use self::args::BenchArgs;
use self::driver::{Limit, Plan};
use self::exchange::Exchange;
use self::progress::Progress;
use self::report::Report;
use crate::cli::FramingArg;

/// Descriptors kept free beyond the connections: stdio, the poll, slack.
const SPARE_DESCRIPTORS: u64 = 64;

/// Runs the load (or holds idle connections) and prints the result; the
/// exit status is non-zero if any connection failed.
pub fn run(args: BenchArgs) -> ExitCode {
    let address = match resolve(&args.connect) {
        Ok(address) => address,
        Err(message) => return fail(&message),
    };
    let concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    let wanted = args
        .idle
        .unwrap_or(0)
        .saturating_add(args.concurrency)
        .saturating_add(SPARE_DESCRIPTORS);
    if let Err(e) = rlimit::increase_nofile_limit(wanted) {
        eprintln!(
            "warning: cannot raise the open file limit: {}",
            describe_error(&e)
        );
    }
    let progress = Progress::on_stderr();
    let framing = match args.framing {
        FramingArg::Burst => "burst",
        FramingArg::Line => "line",
        FramingArg::Eof => "eof",
    };
    let exchange = Exchange::new(args.framing, args.payload);
    let (report_result, mode, idle_connections) = match (args.idle, args.hold) {
        (Some(count), Some(hold)) => {
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            match idle::run(address, count, concurrency, hold, args.timeout, &progress) {
                Ok(held) => (Ok((held.tally, hold, None)), "idle", held.open),
                Err(e) => (Err(e), "idle", 0),
            }
        }
        _ => {
            let plan = Plan {
                address,
                concurrency,
                limit: args
                    .requests
                    .map_or(Limit::Duration(args.duration), Limit::Requests),
                warmup: args.warmup,
                timeout: args.timeout,
                rate: args.rate,
            };
            let measured = driver::run(&plan, &exchange, &progress);
            (measured.map(|m| (m.tally, m.elapsed, m.client_cpu)), "load", 0)
        }
    };
    let (tally, elapsed, client_cpu) = match report_result {
        Ok(result) => result,
        Err(e) => return fail(&format!("the client's event loop failed: {}", describe_error(&e))),
    };
    let report = Report {
        mode,
        framing,
        payload_bytes: args.payload,
        concurrency,
        offered_rate_per_s: args.rate,
        elapsed,
        tally: &tally,
        client_cpu,
        idle_connections,
    };
    let output = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_text()
    };
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        return fail(&format!("cannot write the result: {}", describe_error(&e)));
    }
    if tally.error_total() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    let mut addresses = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
