//! The examples, run as a reader would run them: each as its own process,
//! over loopback, checking what it prints and how it exits, on its happy
//! path and on one failure.
//!
//! Cargo gives integration tests no path to example binaries (there is no
//! `CARGO_BIN_EXE_` for examples), so the tests find them where cargo puts
//! them: `target/<profile>/examples/`, next to this test's own `deps/`
//! directory. A plain `cargo test` builds every example before it runs any
//! test. `cargo test --test examples` alone does not, so a missing binary,
//! or one older than its sources, fails with a message saying to run
//! `cargo build --examples` first, rather than testing stale code or
//! skipping.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::SystemTime;

use common::{PATIENCE, TestServer, config, connect, read_to_end};
use socket2::{Domain, Protocol, Socket, Type};
use wait_timeout::ChildExt;

// ---------------------------------------------------------------------------
// minimal
// ---------------------------------------------------------------------------

#[test]
fn minimal_replies_with_the_message_reversed_then_closes() {
    let server = RunningExample::start("minimal", &["127.0.0.1:0"]);
    let mut client = connect(server.addr);
    client.write_all(b"Hello, world!").expect("send");
    // The reply, then end of stream: the loop closed the connection.
    let reply = read_to_end(&mut client).expect("reply");
    assert_eq!(String::from_utf8_lossy(&reply), "!dlrow ,olleH");
}

#[test]
fn minimal_replies_to_an_empty_message_after_a_half_close() {
    let server = RunningExample::start("minimal", &["127.0.0.1:0"]);
    let mut client = connect(server.addr);
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client).expect("end of stream"), b"");
}

/// `--read-once` reads at most 4 bytes per event. A 14-byte message sent in
/// one write arrives as one segment on loopback: one readable event, one
/// read of 4 bytes, and, because readiness is edge-triggered and no new
/// bytes arrive, never another event for that connection.
///
/// "Never" cannot be waited for, so the test establishes it in order,
/// without sleeping and without a "no reply within N seconds" check (a
/// loaded machine could make a correct server that slow):
/// 1. the stalled client sends its 14 bytes, and the test waits for the
///    example's `read 4 bytes` line: the loop has handled that event;
/// 2. only then a second client connects and is served in full. The loop
///    learned of it in a `poll` that began after step 1, and that `poll`
///    would have returned any event still due for the first client;
/// 3. the first client then has no reply, not even one in flight: on
///    loopback the reply would have been written before the second
///    client's, and the second client's has arrived.
#[test]
fn minimal_with_read_once_stalls_a_message_longer_than_its_read() {
    let mut server = RunningExample::start("minimal", &["--read-once", "127.0.0.1:0"]);
    let mut stalled = connect(server.addr);
    stalled.write_all(b"Hello, world!\n").expect("send 14 bytes");
    assert_eq!(server.next_line(), "read 4 bytes");

    let mut other = connect(server.addr);
    other.write_all(b"Hi").expect("send");
    assert_eq!(read_to_end(&mut other).expect("reply"), b"iH");
    assert_eq!(server.next_line(), "read 2 bytes");

    stalled.set_nonblocking(true).expect("non-blocking");
    let mut buffer = [0u8; 64];
    match stalled.read(&mut buffer) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the first client should be stalled with no reply, but its read gave {other:?}"),
    }
}

#[test]
fn minimal_fails_with_one_line_when_its_address_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = run_to_end("minimal", &[&address]);
    assert_one_error_line(&output, "cannot listen on");
}

/// The walkthrough's fifth failure: out of descriptors, `accept` fails and
/// the minimal loop, which has no back-off, ends with one line. The shell
/// sets the limit (`ulimit -n 16`, as the walkthrough does) and then
/// becomes the example. The clients stay open, so each one the loop
/// accepts holds a descriptor; once the loop has exited, connecting is
/// refused, which ends the supply of clients.
#[test]
fn minimal_out_of_descriptors_ends_with_one_accept_error_line() {
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 16 && exec \"$0\" 127.0.0.1:0"])
        .arg(example_path("minimal"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let address: SocketAddr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {first:?}"))
        .parse()
        .expect("listening address");

    let mut held = Vec::new();
    while held.len() < 200 {
        match std::net::TcpStream::connect(address) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    let status = match child.wait_timeout(PATIENCE).expect("wait") {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the minimal loop did not exit with {} clients held", held.len());
        }
    };
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).expect("stdout");
    let output = Output {
        status,
        stdout: rest,
        stderr: stderr.join().expect("stderr reader"),
    };
    assert_one_error_line(&output, "accept: Too many open files");
}

// ---------------------------------------------------------------------------
// blocking_server
// ---------------------------------------------------------------------------

#[test]
fn blocking_server_serves_its_count_of_clients_then_exits() {
    let mut server = RunningExample::start("blocking_server", &["127.0.0.1:0", "2"]);
    for message in ["Hello, world!", "second"] {
        let mut client = connect(server.addr);
        client.write_all(message.as_bytes()).expect("send");
        let reply = read_to_end(&mut client).expect("reply");
        let expected: String = message.chars().rev().collect();
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        assert!(server.next_line().ends_with(&format!(
            ": received {len} bytes, sent {len}",
            len = message.len()
        )));
    }
    let status = server.wait();
    assert!(status.success(), "after its two clients it exits 0: {status}");
}

#[test]
fn blocking_server_fails_with_one_line_when_its_address_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = run_to_end("blocking_server", &[&address]);
    assert_one_error_line(&output, "cannot listen on");
}

// ---------------------------------------------------------------------------
// blocking_client
// ---------------------------------------------------------------------------

/// The seed's client side, printed as the Python REPL showed it.
const REPL_SESSION: &[&str] = &[
    ">>> client.send(b'Hello, world!')",
    "13",
    ">>> client.recv(1024)",
    "b'!dlrow ,olleH'",
    ">>> client.recv(1024)",
    "b''",
    ">>> client.close()",
];

#[test]
fn blocking_client_replays_the_seed_session_against_its_own_server() {
    let output = run_to_end("blocking_client", &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("# a revecho server in this process, listening on 127.0.0.1:"));
    assert!(
        lines[1]
            .starts_with(">>> client = socket.socket(AF_INET, SOCK_STREAM); client.connect((\"127.0.0.1\", ")
    );
    assert_eq!(&lines[2..], REPL_SESSION);
}

#[test]
fn blocking_client_talks_to_the_minimal_loop() {
    let server = RunningExample::start("minimal", &["127.0.0.1:0"]);
    let output = run_to_end("blocking_client", &[&server.addr.to_string()]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[1..], REPL_SESSION);
}

#[test]
fn blocking_client_fails_with_one_line_when_the_connection_is_refused() {
    // A socket bound but not listening: the port stays ours, so no other
    // process can take it, and a connection to it is refused.
    let address = bound_not_listening();
    let output = run_to_end("blocking_client", &[&address.to_string()]);
    assert_one_error_line(
        &output,
        &format!("cannot connect to {address}: Connection refused"),
    );
}

// ---------------------------------------------------------------------------
// embed
// ---------------------------------------------------------------------------

#[test]
fn embed_does_one_exchange_and_stops_gracefully() {
    let output = run_to_end("embed", &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("sent b\"Hello, world!\\n\", got back \"!dlrow ,olleH\\n\""),
        "{stdout}"
    );
    assert!(stdout.contains("stopped: Finished"), "{stdout}");
    assert!(
        stdout.contains("summary: accepted=1 replies=1 completed=1 bytes_in=14 bytes_out=14"),
        "{stdout}"
    );
}

#[test]
fn embed_fails_with_one_line_when_its_address_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = run_to_end("embed", &[&address]);
    assert_one_error_line(&output, "cannot listen on");
}

// ---------------------------------------------------------------------------
// slow_reader
// ---------------------------------------------------------------------------

#[test]
fn slow_reader_gets_its_whole_reply_back_from_its_own_server() {
    let output = run_to_end("slow_reader", &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("sent 8388608 bytes; read back 8388608 bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("reply is the exact reversal: true"), "{stdout}");
}

/// The default server (burst framing, 1 MiB per message) cannot reply
/// with the 8 MiB reversed: whether it refuses the message or replies to
/// the part that had arrived, the example says which flags it needs.
#[test]
fn slow_reader_against_a_default_server_names_the_flags_it_needs() {
    let server = TestServer::start(config());
    let output = run_to_end("slow_reader", &[&server.addr.to_string()]);
    assert_one_error_line(&output, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--framing eof --max-message 16MiB"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Running examples
// ---------------------------------------------------------------------------

/// An example serving in a child process: its address from the
/// `listening on ADDR` line, then its stdout line by line. Killed on drop.
struct RunningExample {
    child: Child,
    addr: SocketAddr,
    stdout_lines: Receiver<String>,
}

impl RunningExample {
    fn start(name: &str, args: &[&str]) -> RunningExample {
        let mut child = example(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn example {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (sender, stdout_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = RunningExample {
            child,
            addr: "0.0.0.0:0".parse().expect("placeholder"),
            stdout_lines,
        };
        let first = running.next_line();
        running.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name}: expected `listening on ADDR`, got {first:?}"))
            .parse()
            .expect("listening address");
        running
    }

    /// The next line on stdout; panics after [`PATIENCE`] (a hang).
    fn next_line(&mut self) -> String {
        self.stdout_lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("no line on the example's stdout: {e}"))
    }

    /// Waits for the example to exit by itself, at most [`PATIENCE`].
    fn wait(&mut self) -> std::process::ExitStatus {
        match self.child.wait_timeout(PATIENCE).expect("wait") {
            Some(status) => status,
            None => panic!("the example did not exit"),
        }
    }
}

impl Drop for RunningExample {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an example to its end (at most [`PATIENCE`]) and collects its output.
fn run_to_end(name: &str, args: &[&str]) -> Output {
    let mut child = example(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn example {name}: {e}"));
    // The pipes are drained on their own threads, so a chatty example
    // cannot block on a full pipe while we wait for it to exit.
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = match child.wait_timeout(PATIENCE).expect("wait") {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} {args:?} did not exit");
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// A failure as the examples promise it: exit status 1 and exactly one
/// line on stderr, `error: ` followed by something containing `expected`.
fn assert_one_error_line(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(output));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expected),
        "expected `error: …{expected}…`, got:\n{stderr}"
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A loopback address where a socket is bound but not listening. The
/// socket is leaked for the test's lifetime, which keeps the port taken.
fn bound_not_listening() -> SocketAddr {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any_port.into()).expect("bind");
    let address = socket
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address");
    std::mem::forget(socket);
    address
}

// ---------------------------------------------------------------------------
// Finding the example binaries
// ---------------------------------------------------------------------------

/// The built example `name` as a command, with no inherited `RUST_LOG`.
fn example(name: &str) -> Command {
    let path = example_path(name);
    let mut command = Command::new(path);
    command.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    command
}

/// `target/<profile>/examples/<name>`, checked to exist and to be newer
/// than everything it is built from.
fn example_path(name: &str) -> PathBuf {
    // This test runs as target/<profile>/deps/examples-<hash>.
    let test_binary = std::env::current_exe().expect("the test's own path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/");
    let path = profile_dir.join("examples").join(name);
    let how = "`cargo test` builds the examples before it runs the tests; \
               with `cargo test --test examples`, run `cargo build --examples` first";
    let built =
        modified(&path).unwrap_or_else(|| panic!("example binary {} is missing: {how}", path.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![
        root.join("examples").join(format!("{name}.rs")),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    // The library's sources; src/bin/ is the binary, which no example uses.
    collect_files(&root.join("src"), &root.join("src").join("bin"), &mut sources);
    for source in sources {
        if let Some(changed) = modified(&source) {
            assert!(
                changed <= built,
                "example binary {} is older than {}: {how}",
                path.display(),
                source.display()
            );
        }
    }
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|metadata| metadata.modified()).ok()
}

/// Every file under `directory`, except under `skip`.
fn collect_files(directory: &Path, skip: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = directory.read_dir() else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, skip, into);
        } else {
            into.push(path);
        }
    }
}
