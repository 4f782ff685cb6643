//! The chaos test (issue 11): one server in line framing serving hundreds
//! of well-behaved clients at the same time as every kind of faulty one,
//! then checked for what it lost, leaked or miscounted.
//!
//! Run with `cargo test --test chaos -- --nocapture` to see the seed, the
//! plan and the counters. `CHAOS_SEED=N cargo test --test chaos` replays a
//! plan: the same clients with the same messages in the same order. The
//! interleaving is the kernel's and differs from run to run.
//!
//! This is its own test binary holding one test, because it compares the
//! process's descriptor count (`/proc/self/fd`) before and after the storm:
//! another test running in parallel in the same process would move it.
//!
//! # The clients, and where each one can end
//!
//! The server runs with a 1 s idle timeout, a 500 ms linger and an 8 MiB
//! `max_message` (large enough for a reply that does not fit in the socket
//! buffers, which on loopback hold about 3 MB). "Stalled" below means a
//! client thread that the scheduler kept off the CPU for longer than the
//! idle timeout: not expected, but possible on a loaded machine, so the
//! assertions leave room for it and never fail because of it.
//!
//! | class | what it does | where it can end |
//! |---|---|---|
//! | well-behaved | a line in one to three writes, sometimes half-closes after it, reads the reply to end of stream | `completed`; `linger_timeout` if stalled between reading and closing |
//! | drip | a line one byte per `write`, a few ms apart | as well-behaved |
//! | half-close early | part of a line (maybe nothing), then `shutdown(Write)`: in line framing that ends the message, so it gets the part reversed, without terminator | `completed` (the server closes at once: the client already finished) |
//! | reset mid-send | part of a line, then a reset (SO_LINGER 0) | `reset`; `idle_timeout` if stalled before the reset |
//! | reset mid-reply | an 8 MiB line through a small receive buffer, reads the start of the reply, then a reset: the server is blocked mid-write | `reset`; `idle_timeout` if stalled |
//! | never reads, small reply | a short line, then holds the socket and never reads: the reply fits in the buffers, the server lingers | `linger_timeout` |
//! | never reads, large reply | an 8 MiB line through a small receive buffer, then holds the socket: the server's write blocks | `idle_timeout` |
//! | oversize | more than `max_message` bytes without a newline, then reads: end of stream, no reply | `oversize`; `idle_timeout` if stalled before sending it all |
//! | silent | connects and holds the socket without a word | `idle_timeout`, which the client sees as end of stream |
//!
//! The clients that never read and the silent ones are held by the test
//! until the server has closed every connection, so none of them resets
//! early and moves a connection to another counter. The storm is bounded by
//! counts (the plan), not by time; it takes a few seconds.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::{PATIENCE, TestServer, config, connect, exchange, read_to_end, reversed, wait_until};
use revecho::{Config, Exit, Framing, StatsSnapshot};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Big enough for a reply that cannot fit in the kernel's buffers.
const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Short so that silent clients and blocked replies end within the test,
/// long enough that a client thread is never kept off the CPU that long on
/// a busy machine between its connect and its first byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER: Duration = Duration::from_millis(500);
/// Client threads working through the plan at the same time.
const WORKERS: usize = 8;
/// A small receive buffer keeps the TCP window small, so an 8 MiB reply
/// cannot all be taken by the kernel (see `examples/slow_reader.rs`).
const SMALL_RECEIVE_BUFFER: usize = 4096;

/// How many clients of each class the plan holds.
const PLAN: [(Class, usize); 9] = [
    (Class::WellBehaved, 300),
    (Class::Drip, 12),
    (Class::HalfCloseEarly, 24),
    (Class::ResetMidSend, 24),
    (Class::ResetMidReply, 4),
    (Class::NeverReadsSmallReply, 16),
    (Class::NeverReadsLargeReply, 4),
    (Class::Oversize, 6),
    (Class::Silent, 24),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    WellBehaved,
    Drip,
    HalfCloseEarly,
    ResetMidSend,
    ResetMidReply,
    NeverReadsSmallReply,
    NeverReadsLargeReply,
    Oversize,
    Silent,
}

/// One client of the plan, with everything random about it decided up front
/// so that a seed replays it exactly.
#[derive(Debug)]
enum Client {
    WellBehaved {
        line: Vec<u8>,
        /// Where the line is cut into separate writes.
        cuts: Vec<usize>,
        half_close_after: bool,
    },
    Drip {
        line: Vec<u8>,
        pause: Duration,
    },
    HalfCloseEarly {
        partial: Vec<u8>,
    },
    ResetMidSend {
        partial: Vec<u8>,
    },
    ResetMidReply,
    NeverReadsSmallReply {
        line: Vec<u8>,
    },
    NeverReadsLargeReply,
    Oversize {
        /// Bytes sent beyond `MAX_MESSAGE + 1`.
        extra: usize,
    },
    Silent,
}

impl Client {
    fn class(&self) -> Class {
        match self {
            Client::WellBehaved { .. } => Class::WellBehaved,
            Client::Drip { .. } => Class::Drip,
            Client::HalfCloseEarly { .. } => Class::HalfCloseEarly,
            Client::ResetMidSend { .. } => Class::ResetMidSend,
            Client::ResetMidReply => Class::ResetMidReply,
            Client::NeverReadsSmallReply { .. } => Class::NeverReadsSmallReply,
            Client::NeverReadsLargeReply => Class::NeverReadsLargeReply,
            Client::Oversize { .. } => Class::Oversize,
            Client::Silent => Class::Silent,
        }
    }
}

/// What a client leaves behind once its part of the storm is over.
enum Outcome {
    Finished,
    /// A socket the test keeps open until the server has closed its end.
    Held(Class, TcpStream),
    /// An oversize client; `past_the_limit` if the server took more than
    /// `MAX_MESSAGE` bytes from it (only then must it count as oversize).
    Refused {
        past_the_limit: bool,
    },
}

/// xorshift64*: a few lines, no dependency, and the same sequence for the
/// same seed on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // xorshift must not start at 0.
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `range` (inclusive).
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + (self.next() % (high - low + 1) as u64) as usize
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }

    /// `len` random bytes, any value but `\n`.
    fn bytes_without_newline(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| match self.next() as u8 {
                b'\n' => b'N',
                byte => byte,
            })
            .collect()
    }

    /// A line of random content ending in `\n` or `\r\n`.
    fn line(&mut self, max_content: usize) -> Vec<u8> {
        let len = self.between(0, max_content);
        let mut line = self.bytes_without_newline(len);
        if self.chance(4) {
            line.push(b'\r');
        }
        line.push(b'\n');
        line
    }
}

/// The seed from `CHAOS_SEED`, or a fresh one from the clock.
fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED must be a number, got {text:?}")),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64),
    }
}

/// The clients in a seeded random order, each with its random details.
fn plan(rng: &mut Rng) -> Vec<Client> {
    let mut clients = Vec::new();
    for (class, count) in PLAN {
        for _ in 0..count {
            clients.push(match class {
                Class::WellBehaved => {
                    let line = rng.line(2000);
                    let pieces = rng.between(1, 3);
                    let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.between(0, line.len())).collect();
                    cuts.sort_unstable();
                    Client::WellBehaved {
                        line,
                        cuts,
                        half_close_after: rng.chance(4),
                    }
                }
                Class::Drip => Client::Drip {
                    line: rng.line(24),
                    pause: Duration::from_millis(rng.between(2, 10) as u64),
                },
                Class::HalfCloseEarly => {
                    let len = rng.between(0, 500);
                    Client::HalfCloseEarly {
                        partial: rng.bytes_without_newline(len),
                    }
                }
                Class::ResetMidSend => {
                    let len = rng.between(1, 2000);
                    Client::ResetMidSend {
                        partial: rng.bytes_without_newline(len),
                    }
                }
                Class::ResetMidReply => Client::ResetMidReply,
                Class::NeverReadsSmallReply => Client::NeverReadsSmallReply { line: rng.line(200) },
                Class::NeverReadsLargeReply => Client::NeverReadsLargeReply,
                Class::Oversize => Client::Oversize {
                    extra: rng.between(0, 64 * 1024),
                },
                Class::Silent => Client::Silent,
            });
        }
    }
    // Fisher-Yates, so faulty clients are spread through the storm.
    for i in (1..clients.len()).rev() {
        clients.swap(i, rng.between(0, i));
    }
    clients
}

/// The reply line framing gives to `message`: the content reversed, the
/// terminator (`\n` or `\r\n`, if any) kept at the end.
fn expected_reply(message: &[u8]) -> Vec<u8> {
    let terminator = if message.ends_with(b"\r\n") {
        2
    } else if message.ends_with(b"\n") {
        1
    } else {
        0
    };
    let (content, terminator) = message.split_at(message.len() - terminator);
    let mut reply = reversed(content);
    reply.extend_from_slice(terminator);
    reply
}

/// Large buffers every worker shares, built once.
struct Payloads {
    /// An `MAX_MESSAGE`-byte line (the largest allowed), and its reply.
    big_line: Vec<u8>,
    big_reply: Vec<u8>,
    /// More than `MAX_MESSAGE` bytes without a newline.
    too_long: Vec<u8>,
}

impl Payloads {
    fn new() -> Payloads {
        let mut big_line: Vec<u8> = (0..MAX_MESSAGE - 1).map(|i| b'a' + (i % 26) as u8).collect();
        big_line.push(b'\n');
        let big_reply = expected_reply(&big_line);
        let too_long = vec![b'x'; MAX_MESSAGE + 1 + 64 * 1024];
        Payloads {
            big_line,
            big_reply,
            too_long,
        }
    }
}

/// Closes `stream` with SO_LINGER 0, so the kernel sends a reset (RST)
/// instead of the usual FIN.
fn reset(stream: TcpStream) -> Result<(), String> {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("SO_LINGER 0: {e}"))?;
    drop(stream);
    Ok(())
}

/// Connects with a small receive buffer. It must be set before connecting:
/// the window scale is agreed in the handshake.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> Result<TcpStream, String> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    socket
        .set_recv_buffer_size(SMALL_RECEIVE_BUFFER)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    socket
        .connect(&addr.into())
        .map_err(|e| format!("connect: {e}"))?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(|e| format!("read timeout: {e}"))?;
    stream
        .set_write_timeout(Some(PATIENCE))
        .map_err(|e| format!("write timeout: {e}"))?;
    Ok(stream)
}

/// Compares a reply with what was expected, briefly: replies can be long
/// and binary.
fn check_reply(reply: &[u8], expected: &[u8]) -> Result<(), String> {
    if reply == expected {
        return Ok(());
    }
    let first_difference = reply
        .iter()
        .zip(expected)
        .position(|(got, want)| got != want)
        .unwrap_or(reply.len().min(expected.len()));
    Err(format!(
        "wrong reply: {} bytes where {} were expected, first difference at byte {first_difference}",
        reply.len(),
        expected.len()
    ))
}

/// Plays one client of the plan. An `Err` is a failure of the server as
/// seen from that client (or a client-side socket error, which the test
/// also refuses to ignore).
fn run_client(addr: SocketAddr, client: &Client, payloads: &Payloads) -> Result<Outcome, String> {
    let send =
        |stream: &mut TcpStream, bytes: &[u8]| stream.write_all(bytes).map_err(|e| format!("send: {e}"));
    let receive_all =
        |stream: &mut TcpStream| read_to_end(stream).map_err(|e| format!("read the reply: {e}"));
    match client {
        Client::WellBehaved {
            line,
            cuts,
            half_close_after,
        } => {
            let mut stream = connect(addr);
            // Pieces go out at once: with Nagle's algorithm the second
            // piece would wait for the server's delayed ACK (40 ms), which
            // only makes the storm slower.
            stream
                .set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            let mut start = 0;
            for &cut in cuts.iter().chain([&line.len()]) {
                send(&mut stream, &line[start..cut])?;
                start = cut;
            }
            if *half_close_after {
                stream
                    .shutdown(Shutdown::Write)
                    .map_err(|e| format!("half-close: {e}"))?;
            }
            check_reply(&receive_all(&mut stream)?, &expected_reply(line))?;
            Ok(Outcome::Finished)
        }
        Client::Drip { line, pause } => {
            let mut stream = connect(addr);
            // Each byte in its own segment, not merged by Nagle's algorithm.
            stream
                .set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            for (index, byte) in line.iter().enumerate() {
                if index > 0 {
                    // Load shaping, not synchronisation: the pause is what
                    // makes this client a drip (one byte per readable event
                    // on the server), and nothing waits on its outcome. It
                    // is bounded (at most 25 bytes of at most 10 ms each)
                    // and 100 times shorter than the idle timeout.
                    thread::sleep(*pause);
                }
                send(&mut stream, std::slice::from_ref(byte))?;
            }
            check_reply(&receive_all(&mut stream)?, &expected_reply(line))?;
            Ok(Outcome::Finished)
        }
        Client::HalfCloseEarly { partial } => {
            let mut stream = connect(addr);
            send(&mut stream, partial)?;
            stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("half-close: {e}"))?;
            check_reply(&receive_all(&mut stream)?, &expected_reply(partial))?;
            Ok(Outcome::Finished)
        }
        Client::ResetMidSend { partial } => {
            let mut stream = connect(addr);
            send(&mut stream, partial)?;
            reset(stream)?;
            Ok(Outcome::Finished)
        }
        Client::ResetMidReply => {
            let mut stream = connect_with_small_receive_buffer(addr)?;
            send(&mut stream, &payloads.big_line)?;
            // The first bytes of the reply prove the server is writing it;
            // the rest (megabytes) cannot fit in the buffers, so the server
            // is blocked mid-write when the reset arrives.
            let mut start = [0u8; 4096];
            let got = stream
                .read(&mut start)
                .map_err(|e| format!("read the start of the reply: {e}"))?;
            if got == 0 || start[..got] != payloads.big_reply[..got] {
                return Err(format!("wrong start of the reply: {got} bytes"));
            }
            reset(stream)?;
            Ok(Outcome::Finished)
        }
        Client::NeverReadsSmallReply { line } => {
            let mut stream = connect(addr);
            send(&mut stream, line)?;
            Ok(Outcome::Held(Class::NeverReadsSmallReply, stream))
        }
        Client::NeverReadsLargeReply => {
            let mut stream = connect_with_small_receive_buffer(addr)?;
            send(&mut stream, &payloads.big_line)?;
            Ok(Outcome::Held(Class::NeverReadsLargeReply, stream))
        }
        Client::Oversize { extra } => {
            let mut stream = connect(addr);
            let message = &payloads.too_long[..MAX_MESSAGE + 1 + extra];
            // Past the limit the server discards what it reads and may close
            // (the linger ends), so a failed write is allowed here: count
            // what went through.
            let mut sent = 0;
            while sent < message.len() {
                match stream.write(&message[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = stream.shutdown(Shutdown::Write);
            let mut reply = Vec::new();
            match stream.read_to_end(&mut reply) {
                Ok(_) if reply.is_empty() => {}
                Ok(_) => return Err(format!("an oversize client got {} reply bytes", reply.len())),
                // The server closed while the client was still sending.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => return Err(format!("read after oversize: {e}")),
            }
            Ok(Outcome::Refused {
                past_the_limit: sent > MAX_MESSAGE,
            })
        }
        Client::Silent => Ok(Outcome::Held(Class::Silent, connect(addr))),
    }
}

/// Runs the whole plan on [`WORKERS`] threads, each taking the next client
/// in plan order. Returns every client's outcome, by plan index.
fn storm(addr: SocketAddr, plan: Arc<Vec<Client>>) -> Vec<(usize, Result<Outcome, String>)> {
    let payloads = Arc::new(Payloads::new());
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (plan, payloads, next) = (Arc::clone(&plan), Arc::clone(&payloads), Arc::clone(&next));
            thread::spawn(move || {
                let mut outcomes = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(client) = plan.get(index) else {
                        return outcomes;
                    };
                    outcomes.push((index, run_client(addr, client, &payloads)));
                }
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("a client thread panicked"))
        .collect()
}

/// How many connections have ended, by the counters: every way to end,
/// each connection counted once (`StatsSnapshot::closed`).
fn endings(s: &StatsSnapshot) -> u64 {
    s.closed()
}

/// Descriptors this process holds now.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count()
}

fn count(class: Class) -> u64 {
    PLAN.iter()
        .filter(|(planned, _)| *planned == class)
        .map(|&(_, count)| count as u64)
        .sum()
}

#[test]
fn a_storm_of_faulty_clients_loses_no_reply_and_leaks_nothing() {
    let seed = seed();
    println!("chaos seed: {seed} (replay the plan with CHAOS_SEED={seed})");
    let plan = Arc::new(plan(&mut Rng::new(seed)));
    let started = Instant::now();

    let server = TestServer::start(Config {
        framing: Framing::Line,
        max_message: MAX_MESSAGE,
        idle_timeout: Some(IDLE_TIMEOUT),
        // No read timeout: the drip clients are slow on purpose and must be
        // served; `tests/limits.rs` covers the read timeout.
        read_timeout: None,
        linger: LINGER,
        shutdown_grace: Duration::from_secs(1),
        ..config()
    });
    let baseline = open_descriptors();

    let outcomes = storm(server.addr, Arc::clone(&plan));
    let storm_time = started.elapsed();

    let mut failures = Vec::new();
    let mut held = Vec::new();
    let mut oversize_past_the_limit = 0;
    for (index, outcome) in outcomes {
        match outcome {
            Ok(Outcome::Finished) => {}
            Ok(Outcome::Held(class, stream)) => held.push((class, stream)),
            Ok(Outcome::Refused { past_the_limit }) => oversize_past_the_limit += u64::from(past_the_limit),
            Err(error) => failures.push(format!("client {index} ({:?}): {error}", plan[index].class())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed (CHAOS_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving after the storm. This exchange also comes after every
    // storm client in the listener's queue, so once it is served, every one
    // of them has been accepted.
    assert_eq!(
        exchange(server.addr, b"Hello, world!\n", false),
        b"!dlrow ,olleH\n"
    );

    // The held connections end by the server's timers: wait for every
    // connection to have ended, through the counters.
    wait_until("every connection to end (open count 0)", || {
        server.snapshot().open == 0
    });
    let stats = server.snapshot();
    assert_eq!(stats.open, 0, "{stats}");
    println!("after the storm: {stats}");

    // A silent client sees the idle timeout as a clean end of stream.
    for (class, stream) in &mut held {
        if *class == Class::Silent {
            let reply = read_to_end(stream).expect("end of stream after the idle timeout, not a reset");
            assert!(reply.is_empty(), "a silent client got {} bytes", reply.len());
        }
    }
    drop(held);
    wait_until(
        &format!("the descriptor count to return to its baseline of {baseline}"),
        || open_descriptors() <= baseline,
    );
    assert_eq!(open_descriptors(), baseline, "descriptors after the storm");

    // The endings add up: every connection accepted ended exactly once.
    let connections = plan.len() as u64 + 1;
    assert_eq!(stats.accepted, connections, "{stats}");
    assert_eq!(endings(&stats), stats.accepted, "{stats}");

    // Each fault class shows up where it can land (see the table at the
    // top). Lower bounds: a stalled client can add to `idle_timeout` and
    // a slow well-behaved one to `linger_timeout`. `stalled` counts the idle
    // timeouts beyond those of the clients that can only end that way; each
    // stalled client took one away from `reset` or `oversize`.
    let served = count(Class::WellBehaved) + count(Class::Drip) + count(Class::HalfCloseEarly);
    assert_eq!(
        stats.replies_completed,
        served + count(Class::NeverReadsSmallReply) + 1,
        "replies: every well-behaved, drip, half-closing and never-reading-small client, and the final exchange: {stats}"
    );
    let only_idle = count(Class::Silent) + count(Class::NeverReadsLargeReply);
    assert!(stats.closed_idle_timeout >= only_idle, "{stats}");
    let stalled = stats.closed_idle_timeout - only_idle;
    assert!(
        stats.closed_reset + stalled >= count(Class::ResetMidSend) + count(Class::ResetMidReply),
        "resets: {stats}"
    );
    assert!(
        stats.closed_oversize + stalled >= oversize_past_the_limit,
        "oversize: {oversize_past_the_limit} clients sent past the limit: {stats}"
    );
    assert!(
        stats.closed_linger_timeout >= count(Class::NeverReadsSmallReply),
        "linger timeouts: {stats}"
    );
    assert_eq!(stats.closed_io_error, 0, "{stats}");
    assert_eq!(stats.closed_read_timeout, 0, "{stats}");
    assert_eq!(stats.closed_shutdown_cut_off, 0, "{stats}");

    assert_eq!(
        server.stop(),
        Exit::Finished,
        "run() should still have been running"
    );
    println!(
        "chaos: {connections} connections, storm {storm_time:.2?}, total {:.2?}, \
         {stalled} stalled clients, {} slow closers",
        started.elapsed(),
        stats.closed_linger_timeout - count(Class::NeverReadsSmallReply),
    );
}
