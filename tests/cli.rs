//! The `revecho` binary from the outside: the `send` client, the server's
//! command line, `REVECHO_*` variables, errors at start and log levels.
//!
//! Every test runs the real binary as a child process. `send` talks to an
//! in-process `TestServer`; the server runs as a child so that signals,
//! stdout and stderr are its own. Nothing sleeps: tests wait for a reply, a
//! log line or the child's exit.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::ffi::OsStringExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{PATIENCE, RunningBinary, TestServer, exchange, revecho, reversed};
use revecho::{Config, Framing};
use wait_timeout::ChildExt;

/// The seed session's message and its reply.
const HELLO: &[u8] = b"Hello, world!";
const REPLY: &[u8] = b"!dlrow ,olleH";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `revecho ARGS`, with no inherited `REVECHO_*` or `RUST_LOG`.
fn revecho_with<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = revecho();
    command.args(args);
    command
}

/// What a finished run of the binary left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// From just before the spawn to the exit: never shorter than the run.
    elapsed: Duration,
}

impl Finished {
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `command` to its end with `stdin` as its standard input and
/// collects everything it printed. A child still running after [`PATIENCE`]
/// is killed (by its pid) and the test fails, so a wrongly accepted command
/// line that starts a server cannot hang the suite.
fn run(mut command: Command, stdin: &[u8]) -> Finished {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn revecho");
    let pid = child.id();
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    // On its own thread: a child that never reads stdin must not block us.
    // Dropping `input` at the end is the end of file the child waits for.
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output: Output = match receiver.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for revecho"),
        Err(_) => {
            send_signal(pid, "KILL");
            panic!("revecho did not exit within {PATIENCE:?}");
        }
    };
    Finished {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Sends `signal` (a name such as `TERM`) to process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A child that is killed and reaped if the test panics half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server `command`, hands its first listening address to
/// `client`, then sends SIGTERM and collects *all* of stdout and stderr up to
/// the exit. [`RunningBinary`] keeps the rest of stdout to itself and cannot
/// tell when stderr is complete; the tests that assert what was *not*
/// printed need both in full.
fn serve_then_terminate(mut command: Command, client: impl FnOnce(SocketAddr)) -> Finished {
    let start = Instant::now();
    let mut child = KillOnDrop(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn revecho"),
    );
    let mut stderr = child.0.stderr.take().expect("stderr");
    // Drained from the start, so a chatty `-vv` server never blocks on a full pipe.
    let stderr_reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read stdout");
    let Some(addr) = parse_listening_line(&first) else {
        drop(child);
        let stderr = stderr_reader.join().expect("stderr reader");
        panic!("expected `listening on ADDR`, got {first:?}; stderr:\n{stderr}");
    };
    client(addr);
    send_signal(child.0.id(), "TERM");
    let status = match child.0.wait_timeout(PATIENCE).expect("wait for revecho") {
        Some(status) => status,
        None => panic!("revecho did not exit within {PATIENCE:?} of SIGTERM"),
    };
    // The child has exited, so its end of both pipes is closed: these reads end.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read stdout");
    Finished {
        status,
        stdout: (first + &rest).into_bytes(),
        stderr: stderr_reader.join().expect("stderr reader"),
        elapsed: start.elapsed(),
    }
}

/// The address in a `listening on ADDR` line.
fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim_end().strip_prefix("listening on ")?.parse().ok()
}

/// A config for an in-process server that finishes its connections quickly
/// when the test drops it.
fn quick_config(framing: Framing) -> Config {
    Config {
        framing,
        linger: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(1),
        ..common::config()
    }
}

/// A loopback port with nothing listening on it: bound, noted, released.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

fn has_level(stderr: &str, level: &str) -> bool {
    let tag = format!(" {level} ");
    stderr.lines().any(|line| line.contains(&tag))
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic text on stderr:\n{stderr}");
    assert!(
        !stderr.contains("backtrace"),
        "backtrace text on stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// `revecho send`
// ---------------------------------------------------------------------------

#[test]
fn send_prints_the_reversed_message_raw_and_exits_0() {
    let server = TestServer::start(common::config());
    let addr = server.addr.to_string();
    let finished = run(revecho_with(["send", "--connect", &addr, "Hello, world!"]), b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    // Raw: exactly the reply bytes, no newline added.
    assert_eq!(finished.stdout, REPLY);
    assert_eq!(
        finished.stderr, "",
        "send without --trace says nothing on success"
    );
}

#[test]
fn send_passes_a_non_utf8_message_argument_through_unchanged() {
    let server = TestServer::start(common::config());
    let message = b"\xff\xfeab\x80c".to_vec();
    let mut command = revecho_with(["send", "--connect", &server.addr.to_string()]);
    command.arg(OsString::from_vec(message.clone()));
    let finished = run(command, b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, reversed(&message));
}

#[test]
fn send_reads_the_message_from_stdin_when_none_is_given() {
    let server = TestServer::start(common::config());
    // Not UTF-8, and with a NUL, which no command-line argument can carry.
    let message = b"\x00\x01 caf\xc3\xa9 \xff\xfe\x80 end\n".to_vec();
    let finished = run(
        revecho_with(["send", "--connect", &server.addr.to_string()]),
        &message,
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, reversed(&message));
    assert_eq!(finished.stderr, "", "no Ctrl-D hint when stdin is not a terminal");
}

#[test]
fn send_half_closes_by_default_so_an_eof_framing_server_replies() {
    let server = TestServer::start(quick_config(Framing::Eof));
    // Larger than one read and with every byte value: eof framing takes it
    // all, and only the half-close tells the server the message is over.
    let message: Vec<u8> = (0..=255u8).cycle().take(64 * 1024 + 7).collect();
    // `--half-close` is the default, still accepted so old scripts work.
    for flags in [&[][..], &["--half-close"][..]] {
        let mut command = revecho_with(["send", "--connect", &server.addr.to_string(), "--trace"]);
        command.args(flags);
        let finished = run(command, &message);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "{flags:?}: stderr:\n{}",
            finished.stderr
        );
        assert!(
            finished.stdout == reversed(&message),
            "{flags:?}: reply is not the exact reversal"
        );
        let lines = finished.stderr_lines();
        assert!(
            lines.contains(&"shutdown(SHUT_WR): the server will read end of stream"),
            "{flags:?}: --trace should narrate the half-close:\n{}",
            finished.stderr
        );
        assert_eq!(
            lines.last().copied(),
            Some("recv() returned 0 bytes: the server closed the connection")
        );
    }
}

#[test]
fn send_half_close_ends_the_line_for_a_line_framing_server() {
    // No newline in the message: the half-close is the end of the line,
    // and the reply is the plain reversal.
    let server = TestServer::start(quick_config(Framing::Line));
    let finished = run(
        revecho_with(["send", "--connect", &server.addr.to_string(), "Hello, world!"]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, REPLY);
    assert_eq!(finished.stderr, "");
}

#[test]
fn send_counts_a_line_servers_reply_to_the_first_line_as_whole() {
    let server = TestServer::start(quick_config(Framing::Line));
    let finished = run(
        revecho_with(["send", "--connect", &server.addr.to_string()]),
        b"hello\r\nworld\n",
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"olleh\r\n");
    assert_eq!(finished.stderr, "");
}

#[test]
fn send_keep_open_does_not_half_close_and_its_timeout_says_why_that_may_matter() {
    // An eof-framing server waits for a half-close that `--keep-open`
    // never sends, so the reply never comes.
    let server = TestServer::start(quick_config(Framing::Eof));
    let addr = server.addr.to_string();
    let finished = run(
        revecho_with([
            "send",
            "--connect",
            &addr,
            "--keep-open",
            "--trace",
            "--timeout",
            "300ms",
            "hello",
        ]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(1), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"");
    let lines = finished.stderr_lines();
    assert!(
        !lines.iter().any(|line| line.starts_with("shutdown(")),
        "--keep-open sent a shutdown:\n{}",
        finished.stderr
    );
    assert_eq!(
        lines.last().copied().unwrap_or_default(),
        format!(
            "error: no reply from {addr} within 300ms; the server may be waiting for the end of \
             the message, which eof and line framing need (try without --keep-open)"
        )
    );
    assert!(
        finished.elapsed >= Duration::from_millis(300),
        "gave up early: {:?}",
        finished.elapsed
    );
}

#[test]
fn send_keep_open_still_works_against_a_burst_server() {
    let server = TestServer::start(common::config());
    let finished = run(
        revecho_with([
            "send",
            "--connect",
            &server.addr.to_string(),
            "--keep-open",
            "Hello, world!",
        ]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, REPLY);
}

#[test]
fn send_trace_narrates_each_socket_call_like_the_seed_session() {
    let server = TestServer::start(common::config());
    let addr = server.addr.to_string();
    let finished = run(
        revecho_with(["send", "--trace", "--connect", &addr, "Hello, world!"]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(
        finished.stdout, REPLY,
        "the narration goes to stderr, not into the reply"
    );
    let lines = finished.stderr_lines();
    assert_eq!(lines.len(), 5, "one line per step:\n{}", finished.stderr);
    let connected = format!("connected to {addr} from 127.0.0.1:");
    assert!(
        lines[0].starts_with(&connected),
        "{:?} should start with {connected:?}",
        lines[0]
    );
    // The seed's steps 5, 9 and 10: send returns 13, recv gives 13 bytes,
    // then 0; between them, the half-close.
    assert_eq!(lines[1], "send(13 bytes) returned 13");
    assert_eq!(lines[2], "shutdown(SHUT_WR): the server will read end of stream");
    assert_eq!(lines[3], "recv() returned 13 bytes");
    assert_eq!(
        lines[4],
        "recv() returned 0 bytes: the server closed the connection"
    );
}

#[test]
fn send_trace_says_1_byte_not_1_bytes() {
    let server = TestServer::start(common::config());
    let finished = run(
        revecho_with(["send", "--trace", "--connect", &server.addr.to_string(), "x"]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let lines = finished.stderr_lines();
    assert!(
        lines.contains(&"send(1 byte) returned 1"),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        lines.contains(&"recv() returned 1 byte"),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("1 bytes"),
        "stderr:\n{}",
        finished.stderr
    );
}

#[test]
fn send_to_a_closed_port_is_one_error_line_and_exit_1() {
    let addr = closed_port();
    let finished = run(revecho_with(["send", "--connect", &addr.to_string(), "hi"]), b"");
    assert_eq!(finished.status.code(), Some(1), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"", "no reply, so nothing on stdout");
    let lines = finished.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one line:\n{}", finished.stderr);
    assert!(lines[0].starts_with("error: cannot connect to"), "{:?}", lines[0]);
    assert!(
        lines[0].contains(&addr.to_string()),
        "{:?} should name {addr}",
        lines[0]
    );
    assert!(lines[0].ends_with("connection refused"), "{:?}", lines[0]);
}

#[test]
fn send_to_an_unresolvable_host_is_one_error_line_and_exit_1() {
    let finished = run(
        revecho_with(["send", "--connect", "nosuch.invalid:7342", "hi"]),
        b"",
    );
    assert_eq!(finished.status.code(), Some(1), "stderr:\n{}", finished.stderr);
    let lines = finished.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one line:\n{}", finished.stderr);
    assert!(
        lines[0].starts_with("error: cannot resolve nosuch.invalid:7342: "),
        "{:?}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------
// `revecho send`: judging the reply (exit 3), against a scripted server
// ---------------------------------------------------------------------------

/// What the scripted server reads before it answers.
#[derive(Clone, Copy)]
enum ReadUntil {
    /// To end of stream: `send` half-closes by default.
    EndOfStream,
    /// To the first `\n`, as a line server does; the rest stays unread.
    Newline,
}

/// How the scripted server ends the connection after its reply bytes.
#[derive(Clone, Copy)]
enum Then {
    /// A normal close: `shutdown` and drop, end of stream for the client.
    Close,
    /// A reset: SO_LINGER 0, then drop.
    Reset,
    /// Nothing: hold the connection open until the test is over.
    Hold,
}

/// A one-connection server on a thread that answers exactly as told. A real
/// server's outcome in these cases depends on timing; this one's does not.
struct ScriptedServer {
    addr: SocketAddr,
    /// Dropped to let a holding server go.
    release: Option<mpsc::Sender<()>>,
    /// Returns what the server read.
    thread: Option<thread::JoinHandle<Vec<u8>>>,
}

impl ScriptedServer {
    fn start(read_until: ReadUntil, reply: Vec<u8>, then: Then) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (release, released) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
            let mut received = Vec::new();
            let mut buffer = [0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut buffer).expect("read the message");
                received.extend_from_slice(&buffer[..n]);
                let done = match read_until {
                    ReadUntil::EndOfStream => n == 0,
                    ReadUntil::Newline => n == 0 || buffer[..n].contains(&b'\n'),
                };
                if done {
                    break;
                }
            }
            stream.write_all(&reply).expect("write the scripted reply");
            match then {
                Then::Close => {
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
                Then::Reset => {
                    socket2::SockRef::from(&stream)
                        .set_linger(Some(Duration::ZERO))
                        .expect("SO_LINGER 0");
                }
                Then::Hold => {
                    // Until the test drops its end of the channel.
                    let _ = released.recv_timeout(PATIENCE);
                }
            }
            drop(stream);
            received
        });
        ScriptedServer {
            addr,
            release: Some(release),
            thread: Some(thread),
        }
    }

    /// Lets the server go and returns what it read.
    fn finish(mut self) -> Vec<u8> {
        self.release.take();
        self.thread
            .take()
            .expect("not finished yet")
            .join()
            .expect("scripted server panicked")
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.release.take();
    }
}

/// Runs `revecho send --connect ADDR EXTRA...` with `message` on stdin.
fn send_to(addr: SocketAddr, extra: &[&str], message: &[u8]) -> Finished {
    let mut command = revecho_with(["send", "--connect", &addr.to_string()]);
    command.args(extra);
    run(command, message)
}

/// `finished` exited with `code` and printed exactly `line` on stderr.
fn assert_exit_with_line(finished: &Finished, code: i32, line: &str) {
    assert_eq!(finished.status.code(), Some(code), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stderr_lines(), [line], "stderr:\n{}", finished.stderr);
}

#[test]
fn send_exits_3_when_the_server_closes_without_a_reply() {
    // A real server refusing the message for being over its --max-message.
    let server = TestServer::start(Config {
        max_message: 4,
        ..quick_config(Framing::Burst)
    });
    let finished = send_to(server.addr, &[], HELLO);
    assert_exit_with_line(
        &finished,
        3,
        "error: the server closed without a reply \
         (see its log: over --max-message, a per-address limit, a timeout)",
    );
    assert_eq!(finished.stdout, b"");
}

#[test]
fn send_exits_3_for_a_reply_to_part_of_the_message_and_prints_that_part() {
    let message: Vec<u8> = (0..=255u8).cycle().take(204_800).collect();
    let part = reversed(&message[..16_384]);
    let server = ScriptedServer::start(ReadUntil::EndOfStream, part.clone(), Then::Close);
    let finished = send_to(server.addr, &[], &message);
    assert_exit_with_line(
        &finished,
        3,
        "error: the reply covers the first 16384 of 204800 bytes \
         (burst framing takes what has arrived; try the server's --framing eof)",
    );
    assert!(finished.stdout == part, "the bytes that came back go to stdout");
    assert!(server.finish() == message, "the server got the whole message");
}

#[test]
fn send_exits_3_when_the_connection_is_reset_partway_through_the_reply() {
    let part = reversed(&HELLO[..5]);
    let server = ScriptedServer::start(ReadUntil::EndOfStream, part.clone(), Then::Reset);
    let finished = send_to(server.addr, &[], HELLO);
    assert_exit_with_line(
        &finished,
        3,
        "error: the connection was reset after 5 reply bytes",
    );
    assert_eq!(finished.stdout, part);
    server.finish();
}

#[test]
fn send_exits_3_when_the_connection_is_reset_before_any_reply() {
    let server = ScriptedServer::start(ReadUntil::EndOfStream, Vec::new(), Then::Reset);
    let finished = send_to(server.addr, &[], HELLO);
    assert_exit_with_line(
        &finished,
        3,
        "error: the connection was reset before any reply \
         (see its log: over --max-message, a per-address limit, a timeout)",
    );
    assert_eq!(finished.stdout, b"");
    server.finish();
}

#[test]
fn send_exits_3_when_it_times_out_after_some_reply_bytes() {
    let part = reversed(&HELLO[..1]);
    let server = ScriptedServer::start(ReadUntil::EndOfStream, part.clone(), Then::Hold);
    let addr = server.addr;
    let finished = send_to(addr, &["--timeout", "300ms"], HELLO);
    assert_exit_with_line(
        &finished,
        3,
        &format!("error: timed out after 1 reply byte from {addr} within 300ms"),
    );
    assert_eq!(finished.stdout, part);
    assert!(
        finished.elapsed >= Duration::from_millis(300),
        "gave up early: {:?}",
        finished.elapsed
    );
    server.finish();
}

#[test]
fn send_exits_1_when_it_times_out_before_any_reply_byte() {
    let server = ScriptedServer::start(ReadUntil::EndOfStream, Vec::new(), Then::Hold);
    let addr = server.addr;
    let finished = send_to(addr, &["--timeout", "300ms"], HELLO);
    // Nothing came back, so there is nothing to judge.
    assert_exit_with_line(&finished, 1, &format!("error: no reply from {addr} within 300ms"));
    assert_eq!(finished.stdout, b"");
    server.finish();
}

#[test]
fn send_exits_3_for_bytes_that_are_not_a_reversal() {
    let server = ScriptedServer::start(ReadUntil::EndOfStream, HELLO.to_vec(), Then::Close);
    let addr = server.addr;
    let finished = send_to(addr, &[], HELLO);
    assert_exit_with_line(
        &finished,
        3,
        &format!(
            "error: the reply is not the message reversed (13 bytes back, 13 bytes sent); \
             is {addr} a revecho server?"
        ),
    );
    assert_eq!(finished.stdout, HELLO, "an echo, printed as it came");
    server.finish();
}

#[test]
fn send_judges_a_line_reply_that_comes_before_the_rest_of_the_message_is_sent() {
    // A line server answers the first line and resets a client that is
    // still sending: far more than the loopback buffers hold is still to
    // go, so one of `send`'s writes fails. It must stop sending, read the
    // reply, and find it whole.
    let mut message = b"Hello, world!\n".to_vec();
    message.resize(64 * 1024 * 1024, b'x');
    let server = ScriptedServer::start(ReadUntil::Newline, b"!dlrow ,olleH\n".to_vec(), Then::Reset);
    let finished = send_to(server.addr, &["--trace"], &message);
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"!dlrow ,olleH\n");
    assert!(
        finished
            .stderr_lines()
            .iter()
            .any(|line| line.contains(") failed: ") && line.ends_with("; reading what the server sent")),
        "the write should have failed:\n{}",
        finished.stderr
    );
    server.finish();
}

#[test]
fn send_starts_its_timeout_at_connect_after_the_message_is_read() {
    // A person typing at a terminal: standard input stays open for longer
    // than --timeout before the message ends.
    let server = TestServer::start(common::config());
    let mut child = KillOnDrop(
        revecho_with([
            "send",
            "--connect",
            &server.addr.to_string(),
            "--timeout",
            "200ms",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn revecho send"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin.write_all(b"Hello, ").expect("first half");
    // Not a synchronization: the point is that more than the timeout
    // passes while standard input is still open.
    let still_reading = child
        .0
        .wait_timeout(Duration::from_millis(600))
        .expect("wait for revecho send");
    assert!(still_reading.is_none(), "send ended before its input did");
    stdin.write_all(b"world!").expect("second half");
    drop(stdin);
    let status = child.0.wait_timeout(PATIENCE).expect("wait").expect("send hung");
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("stdout");
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(stdout, REPLY);
}

// ---------------------------------------------------------------------------
// The server: addresses, stdout and signals
// ---------------------------------------------------------------------------

#[test]
fn quiet_server_still_prints_its_real_port_serves_and_exits_0_on_sigterm() {
    let mut server = RunningBinary::start(revecho_with(["-q", "-l", "127.0.0.1:0"]), 1);
    let addr = server.addr();
    assert_eq!(addr.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_ne!(
        addr.port(),
        0,
        "port 0 must be reported as the port actually bound"
    );
    assert_eq!(exchange(addr, HELLO, false), REPLY);
    server.signal("TERM");
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
    // -q keeps info lines (serving, shutdown, summary) off stderr.
    assert!(
        !has_level(&server.stderr(), "INFO"),
        "stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn logs_go_to_stderr_and_stdout_has_only_the_listening_lines() {
    let finished = serve_then_terminate(revecho_with(["-vv", "-l", "127.0.0.1:0"]), |addr| {
        assert_eq!(exchange(addr, HELLO, false), REPLY);
    });
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let stdout = finished.stdout_text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout:\n{stdout}");
    assert!(parse_listening_line(lines[0]).is_some(), "{:?}", lines[0]);
    for level in ["INFO", "DEBUG", "TRACE"] {
        assert!(
            has_level(&finished.stderr, level),
            "no {level} line on stderr:\n{}",
            finished.stderr
        );
    }
}

/// The addresses `localhost` resolves to that a socket can be bound to
/// here: ::1 is listed on some systems that have IPv6 turned off.
fn bindable_localhost_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in "localhost:0".to_socket_addrs().expect("resolve localhost") {
        if !ips.contains(&addr.ip()) && TcpListener::bind(addr).is_ok() {
            ips.push(addr.ip());
        }
    }
    ips
}

#[test]
fn localhost_port_0_listens_on_every_local_address_with_one_shared_port() {
    let expected = bindable_localhost_ips();
    assert!(!expected.is_empty(), "localhost has no bindable address here");
    let mut served = Vec::new();
    let finished = serve_then_terminate(revecho_with(["-l", "localhost:0"]), |first| {
        // Every address localhost resolves to answers on the first one's port.
        for ip in &expected {
            let addr = SocketAddr::new(*ip, first.port());
            assert_eq!(exchange(addr, HELLO, false), REPLY, "reply from {addr}");
            served.push(addr);
        }
    });
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let stdout = finished.stdout_text();
    let mut listening: Vec<SocketAddr> = stdout
        .lines()
        .map(|line| parse_listening_line(line).unwrap_or_else(|| panic!("not a listening line: {line:?}")))
        .collect();
    listening.sort();
    served.sort();
    assert_eq!(
        listening, served,
        "one `listening on` line per bindable localhost address"
    );
}

// ---------------------------------------------------------------------------
// Usage: clap's messages, --version, --help
// ---------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2_with_clap_message() {
    // Server cases carry `-l 127.0.0.1:0`: were one wrongly accepted, the
    // server would start on a free port rather than on 7342.
    let cases: &[(&[&str], &str)] = &[
        (
            &["-l", "127.0.0.1:0", "--max-message", "banana"],
            "invalid value 'banana' for '--max-message <SIZE>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--read-chunk", "0"],
            "invalid value '0' for '--read-chunk <SIZE>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--write-chunk", "0"],
            "invalid value '0' for '--write-chunk <SIZE>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--max-connections", "0"],
            "invalid value '0' for '--max-connections <N>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--idle-timeout", "soon"],
            "invalid value 'soon' for '--idle-timeout <DURATION>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--framing", "words"],
            "invalid value 'words' for '--framing <FRAMING>'",
        ),
        (
            &["-l", "127.0.0.1:0", "--max-message", "0"],
            "invalid value '0' for '--max-message <SIZE>': must be at least 1 byte",
        ),
        (
            &["-l", "127.0.0.1:0", "-v", "-q"],
            "error: the argument '--verbose' cannot be used with '--quiet'",
        ),
        // Malformed addresses: no port, a port out of range, an empty entry.
        (
            &["-l", "127.0.0.1"],
            "invalid value '127.0.0.1' for '--listen <ADDR>': no port; expected host:port",
        ),
        (
            &["-l", "127.0.0.1:99999"],
            "invalid value '127.0.0.1:99999' for '--listen <ADDR>': the port 99999 is out of range",
        ),
        (
            &["-l", "127.0.0.1:0,"],
            "invalid value '' for '--listen <ADDR>': an empty address; expected host:port",
        ),
        (
            &["send", "--connect", "localhost", "x"],
            "invalid value 'localhost' for '--connect <ADDR>': no port; expected host:port",
        ),
        (
            &["send", "--connect", "127.0.0.1:99999", "x"],
            "invalid value '127.0.0.1:99999' for '--connect <ADDR>': the port 99999 is out of range",
        ),
        (
            &["-l", "127.0.0.1:0", "--bogus"],
            "unexpected argument '--bogus' found",
        ),
        // Server options and a subcommand do not mix, in either order.
        (
            &["-l", "127.0.0.1:0", "send", "x"],
            "the subcommand 'send' cannot be used with '--listen <ADDR>'",
        ),
        (
            &["send", "--framing", "line", "x"],
            "unexpected argument '--framing' found",
        ),
        (
            &["send", "--timeout", "soon", "x"],
            "invalid value 'soon' for '--timeout <DURATION>'",
        ),
        (
            &["send", "--keep-open", "--half-close", "x"],
            "the argument '--keep-open' cannot be used with '--half-close'",
        ),
    ];
    for (args, expected) in cases {
        let finished = run(revecho_with(*args), b"");
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{args:?}: stderr:\n{}",
            finished.stderr
        );
        assert_eq!(finished.stdout, b"", "{args:?}");
        assert!(
            finished.stderr.starts_with("error: "),
            "{args:?}: stderr:\n{}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("try '--help'"),
            "{args:?}: not clap's message:\n{}",
            finished.stderr
        );
        assert!(
            !finished.stderr.contains("--verbose..."),
            "{args:?}: names the counted flag oddly:\n{}",
            finished.stderr
        );
    }
}

#[test]
fn an_empty_entry_in_the_listen_variable_is_a_usage_error() {
    let mut command = revecho();
    command.env("REVECHO_LISTEN", ",,");
    let finished = run(command, b"");
    assert_eq!(finished.status.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"", "it must fail before listening");
    assert!(
        finished.stderr.starts_with(
            "error: invalid value '' for '--listen <ADDR>': an empty address; expected host:port"
        ),
        "stderr:\n{}",
        finished.stderr
    );
}

#[test]
fn bare_and_bracketed_ipv6_listen_addresses_are_well_formed() {
    // Where ::1 cannot be bound it is skipped with a warning, and
    // 127.0.0.1:0 still listens: either way, not a usage error.
    for ipv6 in ["[::1]:0", "::1:0"] {
        let command = revecho_with(["-l", "127.0.0.1:0", "-l", ipv6]);
        let server = RunningBinary::start(command, 1);
        assert_eq!(exchange(server.addr(), HELLO, false), REPLY, "with -l {ipv6}");
    }
}

#[test]
fn bare_and_bracketed_ipv6_connect_addresses_are_well_formed() {
    // A closed port: with or without IPv6 here, connecting fails (exit 1),
    // which shows the address got past the command line.
    let port = closed_port().port();
    for ipv6 in [format!("[::1]:{port}"), format!("::1:{port}")] {
        let finished = run(revecho_with(["send", "--connect", &ipv6, "hi"]), b"");
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{ipv6}: stderr:\n{}",
            finished.stderr
        );
        assert!(
            finished
                .stderr
                .starts_with(&format!("error: cannot connect to {ipv6}: ")),
            "{ipv6}: stderr:\n{}",
            finished.stderr
        );
    }
}

#[test]
fn version_prints_name_and_version() {
    for args in [&["--version"][..], &["send", "--version"][..]] {
        let finished = run(revecho_with(args), b"");
        assert_eq!(
            finished.status.code(),
            Some(0),
            "{args:?}: stderr:\n{}",
            finished.stderr
        );
        assert_eq!(
            finished.stdout_text(),
            format!("revecho {}\n", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
        assert_eq!(finished.stderr, "", "{args:?}");
    }
}

#[test]
fn help_gives_the_real_default_log_filter() {
    let finished = run(revecho_with(["--help"]), b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let help = finished.stdout_text();
    assert!(
        help.contains("RUST_LOG is used (default: warn,revecho=info)"),
        "--help:\n{help}"
    );
}

/// The lines of `help` that describe `flag`: from its header line to the next one.
fn help_section<'a>(help: &'a str, flag: &str) -> Vec<&'a str> {
    // Option headers are indented 2 (`  -l, --listen`) or 6 (`      --linger`)
    // spaces; their descriptions and possible values are indented further.
    let is_header = |line: &str| line.starts_with("  -") || line.starts_with("      --");
    // `--read-chunk` must not match `--read-chunk-x`: a name ends at a space
    // (`<VALUE>` follows), at `...` (counted flags) or at the line's end.
    let long = format!("--{flag}");
    let names_flag = |line: &str| {
        line.split(", ")
            .filter_map(|part| part.trim().split([' ', '.']).next())
            .any(|name| name == long)
    };
    let mut lines = help
        .lines()
        .skip_while(|line| !(is_header(line) && names_flag(line)));
    let Some(first) = lines.next() else {
        panic!("--help does not mention --{flag}:\n{help}");
    };
    std::iter::once(first)
        .chain(lines.take_while(|line| !is_header(line)))
        .collect()
}

#[test]
fn help_documents_every_server_flag_with_its_default_and_variable() {
    let finished = run(revecho_with(["--help"]), b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let help = finished.stdout_text();
    let flags = [
        ("listen", "localhost:7342", "REVECHO_LISTEN"),
        ("framing", "burst", "REVECHO_FRAMING"),
        ("max-message", "1MiB", "REVECHO_MAX_MESSAGE"),
        ("read-chunk", "16KiB", "REVECHO_READ_CHUNK"),
        ("write-chunk", "unlimited", "REVECHO_WRITE_CHUNK"),
        ("max-connections", "10000", "REVECHO_MAX_CONNECTIONS"),
        ("backlog", "1024", "REVECHO_BACKLOG"),
        ("idle-timeout", "30s", "REVECHO_IDLE_TIMEOUT"),
        ("read-timeout", "60s", "REVECHO_READ_TIMEOUT"),
        ("linger", "2s", "REVECHO_LINGER"),
        ("shutdown-grace", "5s", "REVECHO_SHUTDOWN_GRACE"),
    ];
    for (flag, default, variable) in flags {
        let section = help_section(&help, flag).join("\n");
        assert!(
            section.contains(&format!("[default: {default}]")),
            "--{flag} should show its default {default}:\n{section}"
        );
        assert!(
            section.contains(&format!("[env: {variable}")),
            "--{flag} should name {variable}:\n{section}"
        );
    }
    for flag in ["verbose", "quiet", "version"] {
        help_section(&help, flag);
    }
}

#[test]
fn send_help_documents_its_options_and_defaults() {
    let finished = run(revecho_with(["send", "--help"]), b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    let help = finished.stdout_text();
    for expected in [
        "--connect",
        "[default: localhost:7342]",
        "--timeout",
        "[default: 10s]",
        "--half-close",
        "--keep-open",
        "--trace",
        "[MESSAGE]",
        "send shuts down its write side (a half-close)",
        "Exit status: 0 the whole reply; 1 cannot connect, or no reply byte before the timeout; \
         2 a usage error; 3 a reply that is not whole",
    ] {
        assert!(help.contains(expected), "send --help lacks {expected:?}:\n{help}");
    }
}

// ---------------------------------------------------------------------------
// REVECHO_* variables
// ---------------------------------------------------------------------------

#[test]
fn framing_variable_beats_the_default() {
    let mut command = revecho_with(["-l", "127.0.0.1:0"]);
    command.env("REVECHO_FRAMING", "line");
    let server = RunningBinary::start(command, 1);
    // Line framing keeps the terminator at the end; burst would reverse it
    // to the front ("\ncba").
    assert_eq!(exchange(server.addr(), b"abc\n", false), b"cba\n");
}

#[test]
fn flag_beats_its_variable_even_a_bad_one() {
    let mut command = revecho_with(["-l", "127.0.0.1:0", "--framing", "line", "--max-message", "64KiB"]);
    command
        .env("REVECHO_FRAMING", "eof")
        .env("REVECHO_MAX_MESSAGE", "banana");
    let server = RunningBinary::start(command, 1);
    // Under eof framing this would wait for a half-close and never reply.
    assert_eq!(exchange(server.addr(), b"abc\n", false), b"cba\n");
}

#[test]
fn listen_variable_is_honoured() {
    let mut command = revecho();
    command.env("REVECHO_LISTEN", "127.0.0.1:0");
    let server = RunningBinary::start(command, 1);
    let addr = server.addr();
    assert_eq!(addr.ip(), IpAddr::from([127, 0, 0, 1]));
    assert_ne!(
        addr.port(),
        7342,
        "the default address was used instead of REVECHO_LISTEN"
    );
    assert_ne!(addr.port(), 0);
    assert_eq!(exchange(addr, HELLO, false), REPLY);
}

#[test]
fn bad_server_variables_do_not_break_send() {
    let server = TestServer::start(common::config());
    let mut command = revecho_with(["send", "--connect", &server.addr.to_string(), "Hello, world!"]);
    command
        .env("REVECHO_MAX_MESSAGE", "banana")
        .env("REVECHO_FRAMING", "words")
        .env("REVECHO_READ_CHUNK", "0")
        .env("REVECHO_MAX_CONNECTIONS", "0")
        .env("REVECHO_IDLE_TIMEOUT", "soon");
    let finished = run(command, b"");
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, REPLY);
}

#[test]
fn bad_server_variable_is_a_usage_error_for_the_server() {
    let mut command = revecho_with(["-l", "127.0.0.1:0"]);
    command.env("REVECHO_MAX_MESSAGE", "banana");
    let finished = run(command, b"");
    assert_eq!(finished.status.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"", "it must fail before listening");
    assert!(
        finished
            .stderr
            .starts_with("error: invalid value 'banana' for '--max-message <SIZE>'"),
        "stderr:\n{}",
        finished.stderr
    );
}

// ---------------------------------------------------------------------------
// Errors at start
// ---------------------------------------------------------------------------

#[test]
fn address_in_use_is_one_error_line_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    // Small limits, so that no open-file-limit warning can precede the
    // error on a machine with a low hard limit.
    let args = [
        "-l",
        &addr.to_string(),
        "--max-connections",
        "16",
        "--backlog",
        "16",
    ];
    let finished = run(revecho_with(args), b"");
    assert_eq!(finished.status.code(), Some(1), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"", "nothing was bound, so no listening line");
    assert_eq!(
        finished.stderr,
        format!("error: cannot listen on {addr}: address already in use\n")
    );
    assert_no_panic(&finished.stderr);
    drop(taken);
}

#[test]
fn unresolvable_listen_host_is_one_error_line_and_exit_1() {
    let args = [
        "-l",
        "nosuch.invalid:7342",
        "--max-connections",
        "16",
        "--backlog",
        "16",
    ];
    let finished = run(revecho_with(args), b"");
    assert_eq!(finished.status.code(), Some(1), "stderr:\n{}", finished.stderr);
    assert_eq!(finished.stdout, b"");
    let lines = finished.stderr_lines();
    assert_eq!(lines.len(), 1, "exactly one line:\n{}", finished.stderr);
    assert!(
        lines[0].starts_with("error: cannot resolve nosuch.invalid:7342: "),
        "{:?}",
        lines[0]
    );
    assert_no_panic(&finished.stderr);
}

// ---------------------------------------------------------------------------
// Log levels
// ---------------------------------------------------------------------------

/// Serves one seed exchange, then SIGTERM, and waits for the exit summary
/// (the last log line), so that `stderr()` holds everything logged before it.
fn serve_one_exchange_and_stop(server: &mut RunningBinary) {
    assert_eq!(exchange(server.addr(), HELLO, false), REPLY);
    server.signal("TERM");
    server.wait_for_log("summary: accepted=1 replies=1");
    assert_eq!(server.wait().code(), Some(0), "stderr:\n{}", server.stderr());
}

#[test]
fn default_log_level_is_info() {
    let mut server = RunningBinary::start(revecho_with(["-l", "127.0.0.1:0"]), 1);
    serve_one_exchange_and_stop(&mut server);
    let stderr = server.stderr();
    assert!(stderr.contains("serving: framing burst"), "stderr:\n{stderr}");
    assert!(!has_level(&stderr, "DEBUG"), "stderr:\n{stderr}");
    assert!(!has_level(&stderr, "TRACE"), "stderr:\n{stderr}");
}

#[test]
fn verbose_shows_state_transitions_at_debug() {
    let mut server = RunningBinary::start(revecho_with(["-v", "-l", "127.0.0.1:0"]), 1);
    assert_eq!(exchange(server.addr(), HELLO, false), REPLY);
    let transition = server.wait_for_log("Receiving => Sending");
    assert!(transition.contains(" DEBUG "), "{transition:?}");
    assert!(
        transition.contains("conn "),
        "the line should name the connection: {transition:?}"
    );
    server.signal("TERM");
    server.wait_for_log("summary: accepted=1 replies=1");
    assert_eq!(server.wait().code(), Some(0));
    assert!(
        !has_level(&server.stderr(), "TRACE"),
        "stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn double_verbose_shows_every_read_at_trace() {
    let mut server = RunningBinary::start(revecho_with(["-vv", "-l", "127.0.0.1:0"]), 1);
    assert_eq!(exchange(server.addr(), HELLO, false), REPLY);
    let read = server.wait_for_log("read: 13 bytes");
    assert!(read.contains(" TRACE "), "{read:?}");
    server.wait_for_log("Receiving => Sending");
    server.signal("TERM");
    server.wait_for_log("summary: accepted=1 replies=1");
    assert_eq!(server.wait().code(), Some(0));
}

#[test]
fn rust_log_is_used_without_verbosity_flags() {
    let mut command = revecho_with(["-l", "127.0.0.1:0"]);
    command.env("RUST_LOG", "revecho=debug");
    let mut server = RunningBinary::start(command, 1);
    assert_eq!(exchange(server.addr(), HELLO, false), REPLY);
    let transition = server.wait_for_log("Receiving => Sending");
    assert!(transition.contains(" DEBUG "), "{transition:?}");
    server.signal("TERM");
    server.wait_for_log("summary: accepted=1 replies=1");
    assert_eq!(server.wait().code(), Some(0));
    assert!(
        !has_level(&server.stderr(), "TRACE"),
        "stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn quiet_wins_over_rust_log() {
    let mut command = revecho_with(["-q", "-l", "127.0.0.1:0"]);
    command.env("RUST_LOG", "trace");
    let finished = serve_then_terminate(command, |addr| {
        assert_eq!(exchange(addr, HELLO, false), REPLY);
    });
    assert_eq!(finished.status.code(), Some(0), "stderr:\n{}", finished.stderr);
    for level in ["INFO", "DEBUG", "TRACE"] {
        assert!(
            !has_level(&finished.stderr, level),
            "{level} line under -q:\n{}",
            finished.stderr
        );
    }
}
