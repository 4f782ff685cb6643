// cargo run --release --example faulty_clients -- --connect 127.0.0.1:7342 --connections 1000
//
// A pool of misbehaving clients for the soak (`scripts/soak.sh --faulty`),
// kept apart from `revecho bench` so that the load generator stays a plain
// well-behaved client. It assumes a server in line framing, and runs
// `--connections` clients on `--concurrency` threads, taking the kinds below
// in turn, the same mix as the chaos test (tests/chaos.rs):
//
// - reset mid-send: part of a line, then a reset (SO_LINGER 0);
// - reset mid-reply: a line, the first byte of the reply, then a reset;
// - half-close early: part of a line, then shutdown(Write): in line framing
//   that ends the message, so the reply (the part, reversed) is checked;
// - never reads: a line, then leaves after `--hold` without reading (the
//   unread reply makes the close a reset);
// - oversize: `--max-message` + 1 bytes without a newline, then expects no reply;
// - drip: a short line one byte at a time, then checks the reply;
// - silent, then gone: connects, says nothing for `--hold`, then resets;
// - silent until closed: connects and waits, without a word, for the
//   server's idle timeout (an end of stream).
//
// The holds are short, so the pool does not tie up the server (or itself)
// for long; start the server with a short `--idle-timeout` too. SIGTERM or
// SIGINT stops it early: no new clients start, running ones finish, and the
// summary is printed. It prints one `key=value` line and exits 1 if any
// checked reply was wrong or a client failed in a way no fault explains
// (refused connection, timeout).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use socket2::SockRef;

#[derive(Parser, Debug)]
#[command(about = "Misbehaving clients for a revecho server in line framing")]
struct Args {
    /// Server address, host:port.
    #[arg(long)]
    connect: SocketAddr,
    /// Clients to run in all.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Clients running at once (one thread each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server's --max-message: oversize clients send one byte more.
    #[arg(long, value_parser = parse_bytes, default_value = "64KiB")]
    max_message: u64,
    /// How long never-reading and silent clients stay before leaving.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    hold: Duration,
    /// Longest wait for any one reply or close: longer means the server hung.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text).map_err(|e| e.to_string())
}

/// The kinds of client, taken in turn.
#[derive(Clone, Copy, Debug)]
enum Fault {
    ResetMidSend,
    ResetMidReply,
    HalfCloseEarly,
    NeverReads,
    Oversize,
    Drip,
    SilentThenGone,
    SilentUntilClosed,
}

const FAULTS: [Fault; 8] = [
    Fault::ResetMidSend,
    Fault::ResetMidReply,
    Fault::HalfCloseEarly,
    Fault::NeverReads,
    Fault::Oversize,
    Fault::Drip,
    Fault::SilentThenGone,
    Fault::SilentUntilClosed,
];

/// How one client went.
enum Verdict {
    /// As expected for its kind.
    Ok,
    /// A reply that was checked and did not match.
    WrongReply(String),
    /// Anything else that no fault of the client explains.
    Failed(String),
}

#[derive(Default)]
struct Tally {
    started: AtomicUsize,
    per_fault: [AtomicU64; FAULTS.len()],
    wrong_replies: AtomicU64,
    failures: AtomicU64,
}

fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("error: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (args, stop, tally) = (Arc::clone(&args), Arc::clone(&stop), Arc::clone(&tally));
            thread::spawn(move || work(&args, &stop, &tally))
        })
        .collect();
    for worker in workers {
        if worker.join().is_err() {
            tally.failures.fetch_add(1, Relaxed);
        }
    }
    let elapsed = started.elapsed();
    let mut line = format!(
        "faulty: connections={} seconds={:.1}",
        tally.started.load(Relaxed).min(args.connections),
        elapsed.as_secs_f64()
    );
    for (fault, count) in FAULTS.iter().zip(&tally.per_fault) {
        line += &format!(" {}={}", snake_case(*fault), count.load(Relaxed));
    }
    let wrong = tally.wrong_replies.load(Relaxed);
    let failures = tally.failures.load(Relaxed);
    line += &format!(" wrong_replies={wrong} failures={failures}");
    println!("{line}");
    if wrong == 0 && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One worker: takes the next client number until all are started or a
/// stop is asked for.
fn work(args: &Args, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Relaxed) {
        let number = tally.started.fetch_add(1, Relaxed);
        if number >= args.connections {
            return;
        }
        let fault = FAULTS[number % FAULTS.len()];
        tally.per_fault[number % FAULTS.len()].fetch_add(1, Relaxed);
        match play(fault, number, args) {
            Verdict::Ok => {}
            Verdict::WrongReply(why) => {
                tally.wrong_replies.fetch_add(1, Relaxed);
                eprintln!("client {number} ({fault:?}): wrong reply: {why}");
            }
            Verdict::Failed(why) => {
                tally.failures.fetch_add(1, Relaxed);
                eprintln!("client {number} ({fault:?}): {why}");
            }
        }
    }
}

fn snake_case(fault: Fault) -> &'static str {
    match fault {
        Fault::ResetMidSend => "reset_mid_send",
        Fault::ResetMidReply => "reset_mid_reply",
        Fault::HalfCloseEarly => "half_close_early",
        Fault::NeverReads => "never_reads",
        Fault::Oversize => "oversize",
        Fault::Drip => "drip",
        Fault::SilentThenGone => "silent_then_gone",
        Fault::SilentUntilClosed => "silent_until_closed",
    }
}

/// Plays one client; I/O errors that the fault itself provokes are part of
/// the game, anything else is a failure.
fn play(fault: Fault, number: usize, args: &Args) -> Verdict {
    match try_play(fault, number, args) {
        Ok(verdict) => verdict,
        Err(e) => Verdict::Failed(e.to_string()),
    }
}

fn try_play(fault: Fault, number: usize, args: &Args) -> io::Result<Verdict> {
    let mut stream = TcpStream::connect(args.connect)?;
    stream.set_read_timeout(Some(args.timeout))?;
    stream.set_write_timeout(Some(args.timeout))?;
    let line = format!("faulty client {number}\n").into_bytes();
    let partial = &line[..line.len() - 1];
    match fault {
        Fault::ResetMidSend => {
            stream.write_all(partial)?;
            reset(stream)?;
        }
        Fault::ResetMidReply => {
            stream.write_all(&line)?;
            let mut first = [0u8; 1];
            stream.read_exact(&mut first)?;
            reset(stream)?;
        }
        Fault::HalfCloseEarly => {
            stream.write_all(partial)?;
            stream.shutdown(Shutdown::Write)?;
            let reply = read_all(&mut stream)?;
            return Ok(check(&reply, &reversed(partial)));
        }
        Fault::NeverReads => {
            stream.write_all(&line)?;
            // Load shaping, as in every hold here: how long this client
            // occupies a connection, not a wait for anything.
            thread::sleep(args.hold);
        }
        Fault::Oversize => {
            let too_long = vec![b'x'; args.max_message as usize + 1];
            // The server may close before it has read everything it was
            // sent; a failed write is the expected end then.
            if stream.write_all(&too_long).is_ok() {
                let _ = stream.shutdown(Shutdown::Write);
            }
            return Ok(match read_all(&mut stream) {
                Ok(reply) if reply.is_empty() => Verdict::Ok,
                Ok(reply) => Verdict::WrongReply(format!("{} bytes for an oversize message", reply.len())),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => Verdict::Ok,
                Err(e) => Verdict::Failed(format!("after oversize: {e}")),
            });
        }
        Fault::Drip => {
            stream.set_nodelay(true)?;
            for byte in &line {
                stream.write_all(std::slice::from_ref(byte))?;
                // Load shaping: one byte per segment, a little apart.
                thread::sleep(Duration::from_millis(1));
            }
            let reply = read_all(&mut stream)?;
            return Ok(check(&reply, &line_reply(&line)));
        }
        Fault::SilentThenGone => {
            thread::sleep(args.hold);
            reset(stream)?;
        }
        Fault::SilentUntilClosed => {
            let started = Instant::now();
            let reply = read_all(&mut stream)?;
            if !reply.is_empty() {
                return Ok(Verdict::WrongReply(format!(
                    "{} bytes to a silent client",
                    reply.len()
                )));
            }
            // A read timeout surfaces as an error above; this catches a
            // clock that let it pass.
            if started.elapsed() >= args.timeout {
                return Ok(Verdict::Failed("no idle timeout".into()));
            }
        }
    }
    Ok(Verdict::Ok)
}

/// Closes with SO_LINGER 0: the kernel sends a reset instead of a FIN.
fn reset(stream: TcpStream) -> io::Result<()> {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

fn read_all(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

fn reversed(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().rev().copied().collect()
}

/// The line-framing reply to a `\n`-terminated line.
fn line_reply(line: &[u8]) -> Vec<u8> {
    let mut reply = reversed(&line[..line.len() - 1]);
    reply.push(b'\n');
    reply
}

fn check(reply: &[u8], expected: &[u8]) -> Verdict {
    if reply == expected {
        Verdict::Ok
    } else {
        Verdict::WrongReply(format!(
            "{:?} where {:?} was expected",
            String::from_utf8_lossy(reply),
            String::from_utf8_lossy(expected)
        ))
    }
}
