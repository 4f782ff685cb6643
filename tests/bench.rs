//! `revecho bench` against real servers over loopback: the in-process
//! revecho, scripted servers that reply wrongly or never, and a closed port.
//! Each run is bounded by `--requests` or `--hold` and by `--timeout`; the
//! test waits [`PATIENCE`] for it, which means "hung", never "slow".

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::thread;

use common::{PATIENCE, TestServer, config, revecho, wait_until};
use revecho::Framing;
use serde_json::Value;
use wait_timeout::ChildExt;

/// What one `revecho bench --json` run printed, and how it exited.
struct BenchRun {
    status: ExitStatus,
    report: Value,
    stderr: String,
}

impl BenchRun {
    fn count(&self, field: &str) -> u64 {
        self.report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no number {field} in {}", self.report))
    }
}

/// Runs `revecho bench --connect ADDR --json ARGS` to its end.
fn bench(addr: SocketAddr, args: &[&str]) -> BenchRun {
    let mut child = revecho()
        .args(["bench", "--connect", &addr.to_string(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn revecho bench");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        (out, err)
    });
    let status = match child.wait_timeout(PATIENCE * 2).expect("wait for revecho bench") {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("revecho bench {args:?} hung");
        }
    };
    let (stdout, stderr) = reader.join().expect("reader thread");
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout:?}\nstderr: {stderr}"));
    BenchRun {
        status,
        report,
        stderr,
    }
}

/// A server that accepts `connections` clients, reads `request_length`
/// bytes from each, sends `reply`, and closes the way revecho does.
fn scripted_server(request_length: usize, reply: &'static [u8], connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted server");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(PATIENCE));
            let mut request = vec![0; request_length];
            if stream.read_exact(&mut request).is_err() {
                continue;
            }
            let _ = stream.write_all(reply);
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    addr
}

#[test]
fn every_requested_exchange_completes_against_revecho_and_only_json_reaches_the_pipe() {
    let server = TestServer::start(config());
    let run = bench(server.addr, &["--requests", "300", "--concurrency", "8"]);
    assert!(run.status.success(), "{}\n{}", run.report, run.stderr);
    assert_eq!(run.count("completed"), 300, "{}", run.report);
    assert_eq!(run.count("errors"), 0, "{}", run.report);
    assert_eq!(run.report["mode"], "load");
    assert_eq!(run.report["payload_bytes"], 13);
    assert!(
        run.report["latency_us_p99"].as_f64().is_some_and(|p99| p99 > 0.0),
        "{}",
        run.report
    );
    assert!(
        run.report["connections_per_s"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0)
    );
    assert!(run.report["client_cpu_percent"].is_number(), "{}", run.report);
    assert_eq!(run.stderr, "", "no progress line on a pipe");
    assert_eq!(server.snapshot().replies_completed, 300);
}

#[test]
fn line_and_eof_framing_get_replies_checked_byte_for_byte() {
    for (framing, name, payload) in [(Framing::Line, "line", "100"), (Framing::Eof, "eof", "64KiB")] {
        let server = TestServer::start(revecho::Config { framing, ..config() });
        let run = bench(
            server.addr,
            &["--requests", "40", "--framing", name, "--payload", payload],
        );
        assert!(run.status.success(), "{name}: {}\n{}", run.report, run.stderr);
        assert_eq!(run.count("completed"), 40, "{name}: {}", run.report);
        assert_eq!(server.snapshot().replies_completed, 40, "{name}");
    }
}

#[test]
fn a_wrong_reply_is_counted_and_fails_the_run() {
    let addr = scripted_server(13, b"not the reversal", 3);
    let run = bench(addr, &["--requests", "3", "--concurrency", "1"]);
    assert!(!run.status.success());
    assert_eq!(run.count("errors_wrong_reply"), 3, "{}", run.report);
    assert_eq!(run.count("completed"), 0);
}

#[test]
fn a_reply_one_byte_too_long_is_wrong() {
    // The payload is "abcdefghijklm"; its reversal plus one more byte.
    let addr = scripted_server(13, b"mlkjihgfedcbaX", 2);
    let run = bench(addr, &["--requests", "2", "--concurrency", "1"]);
    assert!(!run.status.success());
    assert_eq!(run.count("errors_wrong_reply"), 2, "{}", run.report);
}

#[test]
fn the_exact_reversal_from_a_scripted_server_passes() {
    let addr = scripted_server(13, b"mlkjihgfedcba", 2);
    let run = bench(addr, &["--requests", "2", "--concurrency", "1"]);
    assert!(run.status.success(), "{}", run.report);
    assert_eq!(run.count("completed"), 2);
}

#[test]
fn a_closed_port_gives_refused_errors_and_a_failing_exit() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let run = bench(addr, &["--requests", "5", "--concurrency", "2"]);
    assert!(!run.status.success());
    assert_eq!(run.count("errors_refused"), 5, "{}", run.report);
    assert_eq!(run.count("completed"), 0);
}

#[test]
fn connects_that_fail_at_once_end_with_the_duration_instead_of_spinning_forever() {
    // A TCP connect to the broadcast address fails inside `connect` itself
    // (ENETUNREACH), not later as an event.
    let addr: SocketAddr = "255.255.255.255:9".parse().expect("address");
    let run = bench(addr, &["--duration", "200ms"]);
    assert!(!run.status.success());
    assert!(run.count("errors_other") > 0, "{}", run.report);
    assert_eq!(run.count("completed"), 0);
}

#[test]
fn a_server_that_never_replies_gives_timeouts_not_a_hang() {
    // The kernel completes the handshakes into the backlog; nobody ever
    // accepts, so nothing is ever replied.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind silent server");
    let addr = listener.local_addr().expect("address");
    let run = bench(
        addr,
        &["--requests", "3", "--concurrency", "3", "--timeout", "300ms"],
    );
    assert!(!run.status.success());
    assert_eq!(run.count("errors_timeout"), 3, "{}", run.report);
    drop(listener);
}

#[test]
fn idle_connections_are_opened_and_held() {
    let server = TestServer::start(config());
    let run = bench(server.addr, &["--idle", "50", "--hold", "100ms"]);
    assert!(run.status.success(), "{}\n{}", run.report, run.stderr);
    assert_eq!(run.count("idle_connections"), 50, "{}", run.report);
    assert_eq!(run.report["mode"], "idle");
    assert!(
        run.stderr.contains("holding 50 idle connections"),
        "{}",
        run.stderr
    );
    // The client saw each handshake finish; the server's accepts may trail.
    wait_until("the server accepted all 50", || server.snapshot().accepted == 50);
}
