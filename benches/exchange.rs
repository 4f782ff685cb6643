// cargo bench --bench exchange
//
//! Whole exchanges, as the seed session does them, against three servers
//! (one of them on two tokio runtimes) in one process: connect, send `b"Hello, world!"`, read the reply to end of
//! stream. Every reply is checked; a wrong one aborts the bench.
//!
//! The servers, all on 127.0.0.1 with a port the kernel picks:
//! - `revecho`: the library's `Server` with its default settings, on its
//!   own thread (one thread, one mio `Poll`).
//! - `tokio 1 thread` and `tokio 2 threads`: a minimal tokio reverse server
//!   written below, on a current-thread runtime and on a two-worker
//!   multi-thread runtime. It keeps revecho's manners so the comparison is
//!   fair: burst framing (wait for data, then take what is there without
//!   blocking), reversal, the whole reply written, `shutdown(Write)`, then a
//!   lingering read until the client closes (at most 2 s).
//! - `std threads`: the seed itself, one blocking thread per connection:
//!   `recv(1024)`, send the reversed bytes, close. Its close is made
//!   graceful the same way (`shutdown(Write)`, then read until the client
//!   closes), so that no server pays for resets and none is spared them.
//!
//! Load: C client threads (1, 8, 64), each doing exchanges one after
//! another. Reported per server and C: exchanges per second, p50 and p99
//! latency, and the process's CPU time per exchange. Figures are medians
//! over [`runs`] runs; the servers take turns within each run so slow
//! phases of a shared machine hit them all alike.
//!
//! Last, the `revecho` binary (cargo builds it for benches too) is started
//! as a child process and holds 5,000 idle connections, to estimate its
//! memory per connection from its resident set size.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use revecho::{Config, Server};

const MESSAGE: &[u8] = b"Hello, world!";
const REPLY: &[u8] = b"!dlrow ,olleH";

/// Client threads.
const CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Runs of every (server, concurrency) cell; the median is reported.
fn runs() -> usize {
    if quick() { 1 } else { 7 }
}

/// Exchanges per run of a cell, split across its client threads: 7 runs of
/// 3,000 make 21,000 exchanges per server per concurrency.
fn exchanges_per_run() -> usize {
    if quick() { 256 } else { 3_000 }
}

/// Set when the binary runs without `--bench`, as under `cargo test
/// --benches`: one short run per cell, so the run only shows that the bench
/// works and every server answers correctly.
static QUICK: AtomicBool = AtomicBool::new(false);

fn quick() -> bool {
    QUICK.load(Ordering::Relaxed)
}

/// A run stops early after this long, so a slow machine still finishes.
const RUN_TIME_LIMIT: Duration = Duration::from_secs(10);
/// A client waiting longer than this for a reply calls the server hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the peers linger after their reply, like revecho's default.
const LINGER: Duration = Duration::from_secs(2);
/// The most a peer buffers for one message, like revecho's default.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Idle connections held open for the memory estimate.
const IDLE_CONNECTIONS: usize = 5_000;
/// Idle connections opened at a time: well under the listen backlog.
const IDLE_BATCH: usize = 250;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Revecho,
    TokioOneThread,
    TokioTwoThreads,
    StdThreads,
}

const PEERS: [Peer; 4] = [
    Peer::Revecho,
    Peer::TokioOneThread,
    Peer::TokioTwoThreads,
    Peer::StdThreads,
];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Revecho => "revecho",
            Peer::TokioOneThread => "tokio 1 thread",
            Peer::TokioTwoThreads => "tokio 2 threads",
            Peer::StdThreads => "std threads",
        }
    }

    fn start(self) -> Running {
        match self {
            Peer::Revecho => start_revecho(),
            Peer::TokioOneThread => start_tokio(false),
            Peer::TokioTwoThreads => start_tokio(true),
            Peer::StdThreads => start_std_threads(),
        }
    }
}

/// A server running on its own thread.
struct Running {
    addr: SocketAddr,
    /// Stops the server; told how many exchanges the clients completed.
    stop: Box<dyn FnOnce(usize)>,
}

// ---------------------------------------------------------------- revecho

fn start_revecho() -> Running {
    let config = Config {
        listen: vec!["127.0.0.1:0".into()],
        ..Config::default()
    };
    let mut server = Server::bind(config).expect("bind revecho");
    let addr = server.local_addrs()[0];
    let stats = server.stats();
    let handle = server.stop_handle();
    let thread = thread::spawn(move || server.run());
    let stop = move |exchanges: usize| {
        handle.stop().expect("stop revecho");
        thread.join().expect("revecho thread").expect("revecho run");
        // The server's own count agrees with the clients', and nothing failed.
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot.replies_completed, exchanges as u64,
            "revecho: {snapshot}"
        );
        assert_eq!(
            snapshot.closed_reset + snapshot.closed_io_error,
            0,
            "revecho saw errors: {snapshot}"
        );
    };
    Running {
        addr,
        stop: Box::new(stop),
    }
}

// ---------------------------------------------------------------- tokio

/// Serves on a runtime on its own thread: current-thread, or two workers.
fn start_tokio(multi_thread: bool) -> Running {
    let stopping = Arc::new(AtomicBool::new(false));
    let (addr_sender, addr_receiver) = mpsc::channel();
    let flag = Arc::clone(&stopping);
    let thread = thread::spawn(move || {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        .expect("tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind tokio peer");
            addr_sender
                .send(listener.local_addr().expect("tokio address"))
                .expect("send address");
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => panic!("tokio peer: accept failed: {e}"),
                };
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                tokio::spawn(tokio_serve(stream));
            }
        });
        // Dropping the runtime cancels any connection still lingering.
    });
    let addr = addr_receiver.recv().expect("tokio peer address");
    Running {
        addr,
        stop: Box::new(move |_| stop_accept_loop(addr, &stopping, thread)),
    }
}

async fn tokio_serve(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut chunk = vec![0; 16 * 1024];
    // Burst framing: wait for the first bytes, then take whatever else has
    // arrived without waiting again.
    let n = stream.read(&mut chunk).await?;
    let mut message = chunk[..n].to_vec();
    if n > 0 {
        loop {
            match stream.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    message.extend_from_slice(&chunk[..n]);
                    if message.len() > MAX_MESSAGE {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    message.reverse();
    stream.write_all(&message).await?;
    stream.shutdown().await?;
    // Linger: discard what the client still sends until it closes, so the
    // close cannot turn into a reset.
    let _ = tokio::time::timeout(LINGER, async {
        while stream.read(&mut chunk).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
    Ok(())
}

// ---------------------------------------------------------------- std threads

/// The seed as a server: a blocking accept loop, one thread per client.
fn start_std_threads() -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind std peer");
    let addr = listener.local_addr().expect("std peer address");
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    let thread = thread::spawn(move || {
        for stream in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let stream = stream.expect("std peer: accept");
            thread::spawn(move || std_serve(stream));
        }
    });
    Running {
        addr,
        stop: Box::new(move |_| stop_accept_loop(addr, &stopping, thread)),
    }
}

fn std_serve(mut stream: TcpStream) -> io::Result<()> {
    // The seed's `data = client.recv(1024)`.
    let mut buffer = [0; 1024];
    let n = stream.read(&mut buffer)?;
    // `client.send(bytes(reversed(data)))`, all of it.
    let reply: Vec<u8> = buffer[..n].iter().rev().copied().collect();
    stream.write_all(&reply)?;
    // The seed's `client.close()`, made graceful: end our half, then read
    // until the client closes, so unread bytes cannot cause a reset.
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER))?;
    while stream.read(&mut buffer)? > 0 {}
    Ok(())
}

/// Stops a peer's accept loop: raise the flag, then connect once so the
/// blocked `accept` returns and sees it.
fn stop_accept_loop(addr: SocketAddr, stopping: &AtomicBool, thread: JoinHandle<()>) {
    stopping.store(true, Ordering::SeqCst);
    drop(TcpStream::connect(addr).expect("wake the accept loop"));
    thread.join().expect("peer accept thread");
}

// ---------------------------------------------------------------- load

/// One run of one cell: what the clients measured.
struct Outcome {
    exchanges: usize,
    elapsed: Duration,
    /// CPU time of the whole process (clients and server) meanwhile.
    cpu: Duration,
    /// Every exchange's time from `connect` to end of stream, sorted.
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.exchanges as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_exchange(&self) -> Duration {
        self.cpu / self.exchanges as u32
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[index - 1]
    }
}

/// The seed's client: connect, send, read to end of stream, check.
fn exchange(addr: SocketAddr, peer: Peer) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{}: connect: {e}", peer.name()));
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(MESSAGE)
        .unwrap_or_else(|e| panic!("{}: send: {e}", peer.name()));
    let mut reply = Vec::with_capacity(REPLY.len());
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("{}: reading the reply: {e}", peer.name()));
    let elapsed = start.elapsed();
    assert_eq!(reply, REPLY, "{} sent a wrong reply", peer.name());
    elapsed
}

fn run_cell(peer: Peer, clients: usize) -> Outcome {
    let server = peer.start();
    let addr = server.addr;
    let per_client = exchanges_per_run() / clients;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<JoinHandle<Vec<Duration>>> = (0..clients)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_client);
                barrier.wait();
                let stop_at = Instant::now() + RUN_TIME_LIMIT;
                while latencies.len() < per_client && Instant::now() < stop_at {
                    latencies.push(exchange(addr, peer));
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let cpu_at_start = process_cpu();
    let mut latencies = Vec::with_capacity(exchanges_per_run());
    for thread in threads {
        match thread.join() {
            Ok(some) => latencies.extend(some),
            // The client's panic message (a wrong reply, say) is already printed.
            Err(_) => panic!("{}: a client failed; aborting the bench", peer.name()),
        }
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_at_start);
    (server.stop)(latencies.len());
    latencies.sort_unstable();
    Outcome {
        exchanges: latencies.len(),
        elapsed,
        cpu,
        latencies,
    }
}

/// User plus system CPU time of this process, all threads, exited ones
/// included, from `/proc/self/stat`. Clients and servers share the process,
/// so with the same clients, a difference between servers is theirs. The
/// unit is the kernel's USER_HZ tick, 10 ms, so a run needs a second or so
/// of CPU for a figure to within a few percent.
fn process_cpu() -> Duration {
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15, so 11 and 12 after the name.
    let ticks: u32 = fields[11..13]
        .iter()
        .map(|field| field.parse::<u32>().expect("stat tick count"))
        .sum();
    TICK * ticks
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------- idle memory

/// The median time of `count` exchanges with revecho, one after another.
fn median_exchange(addr: SocketAddr, count: usize) -> Duration {
    let mut times: Vec<Duration> = (0..count).map(|_| exchange(addr, Peer::Revecho)).collect();
    times.sort_unstable();
    times[count / 2]
}

/// Resident set size of a process, in KiB, from `/proc/PID/status`.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open descriptors of a process.
fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Waits, until `give_up` at most, for the process to hold exactly `wanted`
/// descriptors: each accepted client holds one.
fn wait_for_descriptors(pid: u32, wanted: usize, give_up: Instant) {
    loop {
        let open = open_descriptors(pid).expect("child's descriptors");
        if open == wanted {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "revecho holds {open} descriptors, expected {wanted}, after 60 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Kills the child on every exit path, panics included.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `revecho` binary, opens [`IDLE_CONNECTIONS`]
/// that send nothing, and reports how its resident set grew. Also times
/// normal exchanges while they are all open.
fn idle_memory() {
    let binary = Path::new(env!("CARGO_BIN_EXE_revecho"));
    if !binary.exists() {
        println!("(skipped: {} is not built)", binary.display());
        return;
    }
    let wanted = IDLE_CONNECTIONS as u64 + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit >= wanted => {}
        other => {
            println!("(skipped: cannot open {IDLE_CONNECTIONS} descriptors: limit {other:?})");
            return;
        }
    }
    let mut command = Command::new(binary);
    // Inherited REVECHO_* variables must not change the server measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REVECHO_") {
            command.env_remove(&name);
        }
    }
    let mut child = ChildGuard(
        command
            // Timeouts long enough never to fire here, but on, so that every
            // idle connection holds a deadline as it would in production.
            .args([
                "--listen",
                "127.0.0.1:0",
                "-q",
                "--idle-timeout",
                "10m",
                "--read-timeout",
                "10m",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn revecho"),
    );
    let pid = child.0.id();
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0];
    while stdout.read(&mut byte).expect("read `listening on`") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("utf-8 stdout");
    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .parse()
        .expect("listening address");

    // Warm up the allocator and code paths first, so the growth below is
    // the connections', not the first requests'. These exchanges also give
    // the latency with no idle client, to compare with.
    let descriptors_before = open_descriptors(pid).expect("child's descriptors");
    let alone = median_exchange(addr, 200);
    let give_up = Instant::now() + Duration::from_secs(60);
    // The server closes a connection when it reads the client's close,
    // which can be after the client has moved on: wait for the last ones.
    wait_for_descriptors(pid, descriptors_before, give_up);
    let before = resident_kib(pid).expect("child's VmRSS");

    // Connect in batches smaller than the listen backlog, each accepted
    // before the next: a connection the kernel drops from a full accept
    // queue waits for the server's SYN-ACK retransmission (1 s, 2 s, 4 s …),
    // which would measure the kernel's back-off, not revecho.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    while idle.len() < IDLE_CONNECTIONS {
        let batch = IDLE_BATCH.min(IDLE_CONNECTIONS - idle.len());
        idle.extend((0..batch).map(|_| TcpStream::connect(addr).expect("connect an idle client")));
        wait_for_descriptors(pid, descriptors_before + idle.len(), give_up);
    }
    let after = resident_kib(pid).expect("child's VmRSS");
    let among_idle = median_exchange(addr, 200);
    drop(idle);

    let grown = after.saturating_sub(before);
    println!("revecho binary holding {IDLE_CONNECTIONS} idle connections (each with a pending deadline):");
    println!("- VmRSS {before} KiB before, {after} KiB with them open: +{grown} KiB,");
    println!(
        "  about {:.0} bytes per idle connection",
        grown as f64 * 1024.0 / IDLE_CONNECTIONS as f64
    );
    println!("  (the process's memory only: sockets and their buffers live in the kernel)");
    println!(
        "- median of 200 exchanges (1 client): {:.0} µs alone, {:.0} µs among the idle connections",
        micros(alone),
        micros(among_idle)
    );
}

/// The machine's load average, to print with the results: other work on a
/// shared machine moves every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|loadavg| loadavg.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let started = Instant::now();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !std::env::args().any(|arg| arg == "--bench") {
        QUICK.store(true, Ordering::Relaxed);
        println!("quick check (not run by `cargo bench`): the figures below mean nothing\n");
    }
    println!("load average at start: {}", load_average());
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = PEERS
        .iter()
        .map(|_| CONCURRENCY.iter().map(|_| Vec::new()).collect())
        .collect();
    for run in 1..=runs() {
        for (c, &clients) in CONCURRENCY.iter().enumerate() {
            for (p, &peer) in PEERS.iter().enumerate() {
                let outcome = run_cell(peer, clients);
                eprintln!(
                    "run {run}/{}: {:<15} {clients:>2} clients: {:>5} exchanges, {:>6.0}/s, CPU {:>3.0} µs each",
                    runs(),
                    peer.name(),
                    outcome.exchanges,
                    outcome.rate(),
                    micros(outcome.cpu_per_exchange())
                );
                outcomes[p][c].push(outcome);
            }
        }
    }

    println!("\nExchanges (connect, send 13 bytes, read the reply to end of stream) over loopback.");
    println!(
        "Median of {} runs of {} exchanges each (range: slowest and fastest run).",
        runs(),
        exchanges_per_run()
    );
    println!("Latency: connect to end of stream. CPU: the whole process (clients too) per exchange.\n");
    println!(
        "| {:>7} | {:<15} | {:>11} | {:>13} | {:>6} | {:>6} | {:>13} |",
        "clients", "server", "exchanges/s", "runs' range", "p50 µs", "p99 µs", "CPU µs / exch"
    );
    println!(
        "|{:->9}|{:-<17}|{:->13}|{:->15}|{:->8}|{:->8}|{:->15}|",
        ":", "", ":", ":", ":", ":", ":"
    );
    for (c, &clients) in CONCURRENCY.iter().enumerate() {
        for (p, &peer) in PEERS.iter().enumerate() {
            let runs = &outcomes[p][c];
            let rate = median(runs.iter().map(Outcome::rate).collect());
            let p50 = median(runs.iter().map(|o| micros(o.percentile(0.50))).collect());
            let p99 = median(runs.iter().map(|o| micros(o.percentile(0.99))).collect());
            let cpu = median(runs.iter().map(|o| micros(o.cpu_per_exchange())).collect());
            let slowest = runs.iter().map(Outcome::rate).fold(f64::INFINITY, f64::min);
            let fastest = runs.iter().map(Outcome::rate).fold(0.0, f64::max);
            let range = format!("{slowest:.0}-{fastest:.0}");
            println!(
                "| {clients:>7} | {:<15} | {rate:>11.0} | {range:>13} | {p50:>6.0} | {p99:>6.0} | {cpu:>13.0} |",
                peer.name()
            );
        }
    }
    let total: usize = outcomes.iter().flatten().flatten().map(|o| o.exchanges).sum();
    println!("\n{total} exchanges, every reply checked.\n");

    if quick() {
        println!("(idle connections: skipped in the quick check)");
    } else {
        idle_memory();
    }
    println!("\nload average at end: {}", load_average());
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
}
