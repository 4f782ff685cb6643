//! Helpers shared by the integration tests: an in-process server on a free
//! port, the `revecho` binary as a child process, and blocking clients with
//! generous timeouts (a timeout here means "hung", never "slow").
//!
//! Nothing here sleeps to synchronize: tests wait for a reply, an end of
//! stream, a log line or a process exit.

#![allow(dead_code)] // Each test file uses a different part of this module.

pub mod transcript;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use revecho::{Config, Exit, Server, Stats, StatsSnapshot, StopHandle};
use wait_timeout::ChildExt;

/// How long any single wait may take before the test calls it a hang.
/// Generous, because a loaded 2-core CI machine can be slow.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A config listening on a free loopback port.
pub fn config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".into()],
        ..Config::default()
    }
}

/// A server running on its own thread, stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<Exit>>>,
}

impl TestServer {
    /// Binds `config` and runs it on a new thread.
    pub fn start(config: Config) -> TestServer {
        let mut server = Server::bind(config).expect("bind test server");
        let addr = server.local_addrs()[0];
        let stats = server.stats();
        let stop = server.stop_handle();
        let thread = thread::spawn(move || server.run());
        TestServer {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops gracefully and returns how `run` ended.
    pub fn stop(mut self) -> Exit {
        self.stop_and_join().expect("server thread").expect("run")
    }

    fn stop_and_join(&mut self) -> Option<io::Result<Exit>> {
        let thread = self.thread.take()?;
        self.stop.stop().expect("wake server");
        Some(thread.join().expect("server thread panicked"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop_and_join();
        }
    }
}

/// Connects with read and write timeouts of [`PATIENCE`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// Connects from `source`, which must be a local address: loopback owns
/// all of 127.0.0.0/8, so `127.0.0.2` is a second client host for free.
/// The client socket is bound before it connects.
pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind the client socket");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// Reads until end of stream.
pub fn read_to_end(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Sends `message` (then half-closes if asked) and reads the reply to end of stream.
pub fn exchange(addr: SocketAddr, message: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(message).expect("send");
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    }
    read_to_end(&mut stream).expect("read reply")
}

/// `message` reversed.
pub fn reversed(message: &[u8]) -> Vec<u8> {
    message.iter().rev().copied().collect()
}

/// The reply to a `\n`-terminated line in line framing: its content
/// reversed, then the `\n`.
pub fn line_reply(line: &[u8]) -> Vec<u8> {
    let mut reply = reversed(&line[..line.len() - 1]);
    reply.push(b'\n');
    reply
}

/// Connects `count` clients and has each send one line, `"{label} {i}\n"`,
/// without reading: the messages wait wherever the server is (in its
/// backlog, say) until it serves them. Pairs with [`assert_line_replies`].
pub fn send_lines(addr: SocketAddr, count: usize, label: &str) -> Vec<(TcpStream, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let mut client = connect(addr);
            let message = format!("{label} {i}\n").into_bytes();
            client.write_all(&message).expect("send a line");
            (client, message)
        })
        .collect()
}

/// Reads each client's reply to end of stream (a reset fails the test) and
/// checks that it is the line reply to the message that client sent.
pub fn assert_line_replies(clients: &mut [(TcpStream, Vec<u8>)]) {
    for (client, message) in clients {
        let reply = read_to_end(client).expect("reply, not a reset");
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&line_reply(message))
        );
    }
}

/// Waits until `condition` holds, polling the counters; panics after [`PATIENCE`].
/// For state that no socket event reveals (a counter bumped after a close).
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// The `revecho` binary with no inherited `REVECHO_*` or `RUST_LOG`.
pub fn revecho() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_revecho"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REVECHO_") {
            command.env_remove(&name);
        }
    }
    command.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    command
}

/// The binary serving in a child process, with its stderr collected line by line.
pub struct RunningBinary {
    pub child: Child,
    /// Every address from the `listening on ADDR` lines.
    pub addrs: Vec<SocketAddr>,
    stderr_lines: Receiver<String>,
    stderr_seen: Arc<Mutex<Vec<String>>>,
    /// Stdout after the `listening on` lines, line by line.
    stdout_lines: Receiver<String>,
}

impl RunningBinary {
    /// Starts `command` (made with [`revecho`]) and reads `listeners` lines
    /// of `listening on ADDR` from its stdout.
    pub fn start(mut command: Command, listeners: usize) -> RunningBinary {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn revecho");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, stderr_lines) = mpsc::channel();
        let stderr_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&stderr_seen);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen.lock().expect("stderr lock").push(line.clone());
                let _ = sender.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addrs = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read stdout");
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"));
            addrs.push(addr.parse().expect("listening address"));
        }
        let (sender, stdout_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        RunningBinary {
            child,
            addrs,
            stderr_lines,
            stderr_seen,
            stdout_lines,
        }
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Waits for a stderr line containing `needle` (and returns it).
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_where(needle, |line| line.contains(needle))
    }

    /// Waits for a stderr line for which `wanted` holds (and returns it);
    /// `what` describes it in the failure message.
    pub fn wait_for_log_where(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line matching {what:?}:\n{}", self.stderr())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "stderr closed before a line matching {what:?}:\n{}",
                        self.stderr()
                    )
                }
            }
        }
    }

    /// Waits for the next stdout line after the `listening on` lines (and
    /// returns it); panics after [`PATIENCE`].
    pub fn next_stdout_line(&self) -> String {
        match self.stdout_lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => panic!("no stdout line ({e}):\n{}", self.stderr()),
        }
    }

    /// All stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_seen.lock().expect("stderr lock").join("\n")
    }

    /// Sends a signal to the child (by number, through `kill`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the child to exit, at most [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        match self.child.wait_timeout(PATIENCE).expect("wait for revecho") {
            Some(status) => status,
            None => panic!("revecho did not exit:\n{}", self.stderr()),
        }
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops `server` and checks that every connection it accepted was counted
/// as closed in exactly one way: once none is open, the `closed_*` counters
/// add up to `accepted`. Returns the final counters.
pub fn stop_accounted(server: TestServer) -> StatsSnapshot {
    let stats = Arc::clone(&server.stats);
    server.stop();
    let last = stats.snapshot();
    assert_eq!(last.open, 0, "connections left open after stop: {last:?}");
    assert_eq!(
        last.accepted,
        last.closed(),
        "accepted connections not each counted once as closed: {last:?}"
    );
    last
}

/// A [`revecho::Workers`] running on its own thread, stopped and joined
/// on drop, with each worker's counters.
pub struct TestWorkers {
    pub addr: SocketAddr,
    pub stats: Vec<Arc<Stats>>,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<Exit>>>,
}

impl TestWorkers {
    /// Binds `count` workers for `config` and runs them on a new thread.
    pub fn start(config: Config, count: usize) -> TestWorkers {
        let workers = revecho::Workers::bind(config, count).expect("bind test workers");
        let addr = workers.local_addrs()[0];
        let stats = workers.stats();
        let stop = workers.stop_handle();
        let thread = thread::spawn(move || workers.run());
        TestWorkers {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// Each worker's `accepted` count now.
    pub fn accepted(&self) -> Vec<u64> {
        self.stats.iter().map(|stats| stats.snapshot().accepted).collect()
    }

    /// Every worker's counters added up.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.iter().map(|stats| stats.snapshot()).sum()
    }
}

impl Drop for TestWorkers {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take()
            && !thread::panicking()
        {
            self.stop.stop().expect("wake workers");
            let exit = thread.join().expect("workers thread panicked");
            assert_eq!(exit.expect("run"), Exit::Finished);
        }
    }
}
