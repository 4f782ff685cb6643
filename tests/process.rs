//! The `revecho` binary as a child process: graceful shutdown on SIGINT and
//! SIGTERM, the grace period, a second signal, the backlog drain at shutdown,
//! running out of descriptors (EMFILE), the descriptor limit at start, and
//! the counters printed on SIGUSR1.
//!
//! Signals reach every thread of a process, so none of this can run against an
//! in-process server: each test starts its own child and talks to it over
//! loopback, learning the port from the `listening on ADDR` line.
//!
//! Run with `cargo test --test process`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    PATIENCE, RunningBinary, assert_line_replies, connect, connect_from, read_to_end, revecho, send_lines,
    wait_until,
};
use revecho::ACCEPT_BACKOFF;
use revecho::fd_limit::RESERVE;

/// Starts `revecho ARGS` and waits for its listening address.
fn start(args: &[&str]) -> RunningBinary {
    let mut command = revecho();
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    RunningBinary::start(command, 1)
}

/// Starts `revecho ARGS` under `sh -c 'SETUP; exec revecho ARGS'`, with the
/// same cleaned environment as [`revecho`]. `exec` keeps the process id, so
/// signals and `/proc/<pid>` reach revecho itself, not the shell.
fn start_under_shell(setup: &str, args: &[&str]) -> RunningBinary {
    let mut command = Command::new("sh");
    for (name, value) in revecho().get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
        .arg("-c")
        .arg(format!(r#"{setup}; exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_revecho"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    RunningBinary::start(command, 1)
}

/// One counter from the `summary:` line (`accepted=3 replies=3 ...`) or
/// the `stats:` line SIGUSR1 prints (`stats: open=0 accepted=3 ...`).
fn counter(summary: &str, key: &str) -> u64 {
    let (_, pairs) = summary
        .split_once("summary: ")
        .or_else(|| summary.split_once("stats: "))
        .unwrap_or_else(|| panic!("not a summary or stats line: {summary:?}"));
    pairs
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {summary:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {summary:?}: {e}"))
}

/// The ways a connection ends, as named in the summary line.
const ENDS: [&str; 10] = [
    "completed",
    "oversize",
    "idle_timeout",
    "read_timeout",
    "reset",
    "io_error",
    "linger_timeout",
    "shutdown_cut_off",
    "per_ip_limit",
    "proxy_error",
];

/// Every accepted connection is counted once among the ends, plus `open`
/// for a `stats:` line (none is open at the summary).
fn assert_accounted(line: &str) {
    let ended: u64 = ENDS.iter().map(|end| counter(line, end)).sum();
    let open = if line.contains("stats: ") {
        counter(line, "open")
    } else {
        0
    };
    assert_eq!(counter(line, "accepted"), open + ended, "{line}");
}

/// How many stderr lines so far contain `needle`.
fn log_count(server: &RunningBinary, needle: &str) -> usize {
    server
        .stderr()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// Waits for the child to exit and returns its exit code.
fn exit_code(server: &mut RunningBinary) -> i32 {
    let status = server.wait();
    status
        .code()
        .unwrap_or_else(|| panic!("revecho ended by a signal ({status}):\n{}", server.stderr()))
}

/// A connection attempt to a closed listener is refused.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect after shutdown: {e}"
        ),
        Ok(_) => panic!("a new client was accepted after the shutdown began"),
    }
}

/// The soft and hard RLIMIT_NOFILE of a process, from `/proc/<pid>/limits`
/// (`Max open files  3088  20000  files`). `None` stands for "unlimited".
fn open_file_limits(pid: &str) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a `Max open files` line");
    let values: Vec<Option<u64>> = line["Max open files".len()..]
        .split_whitespace()
        .take(2)
        .map(|value| value.parse().ok())
        .collect();
    (values[0], values[1])
}

/// The state letter of a process (`S` sleeping, `T` stopped, ...), from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name is in parentheses and may itself contain spaces or
    // parentheses; the state is the first field after the last `)`.
    let after_name = &stat[stat.rfind(')').expect("`)` in stat") + 1..];
    after_name.trim_start().chars().next().expect("state letter")
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

/// One client served, then `signal`: the listener closes, one summary line
/// counts the client, and the exit code is 0.
fn shuts_down_gracefully_on(signal: &str) {
    let mut server = start(&[]);
    let addr = server.addr();
    assert_eq!(common::exchange(addr, b"Hello, world!", false), b"!dlrow ,olleH");

    server.signal(signal);
    let shutting_down = server.wait_for_log("shutting down");
    assert!(
        shutting_down.contains(&format!("SIG{signal}: shutting down")),
        "{shutting_down}"
    );
    assert!(
        shutting_down.contains("INFO"),
        "not logged at info: {shutting_down}"
    );
    // The listener closed before the line was logged, so nobody new gets in.
    assert_refused(addr);

    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert!(summary.contains("INFO"), "not logged at info: {summary}");
    assert_eq!(counter(&summary, "accepted"), 1, "{summary}");
    assert_eq!(counter(&summary, "replies"), 1, "{summary}");
    assert_eq!(counter(&summary, "bytes_out"), 13, "{summary}");
    assert_eq!(counter(&summary, "shutdown_cut_off"), 0, "{summary}");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
    assert_eq!(log_count(&server, "summary:"), 1, "{}", server.stderr());
}

#[test]
fn sigterm_closes_the_listener_logs_a_summary_and_exits_0() {
    shuts_down_gracefully_on("TERM");
}

#[test]
fn sigint_closes_the_listener_logs_a_summary_and_exits_0() {
    shuts_down_gracefully_on("INT");
}

#[test]
fn client_in_flight_at_sigterm_still_gets_its_whole_reply() {
    let mut server = start(&["--framing", "eof", "--shutdown-grace", "10s", "-vv"]);
    let mut client = connect(server.addr());
    client.write_all(b"Hello, ").expect("send first part");
    // The server has read the first part: the connection is truly in flight.
    server.wait_for_log("read: 7 bytes");

    let signalled = Instant::now();
    server.signal("TERM");
    let shutting_down = server.wait_for_log("shutting down");
    assert!(
        shutting_down.contains("shutting down; 1 connection"),
        "{shutting_down}"
    );
    assert_refused(server.addr());

    // The rest of the message arrives after the shutdown began.
    client.write_all(b"world!").expect("send the rest");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_end(&mut client).expect("reply"), b"!dlrow ,olleH");

    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(counter(&summary, "replies"), 1, "{summary}");
    assert_eq!(counter(&summary, "shutdown_cut_off"), 0, "{summary}");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
    // With its last connection done, the server exits without sitting out
    // the 10s grace period.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?}",
        signalled.elapsed()
    );
}

#[test]
fn grace_period_ends_by_cutting_off_a_silent_client_and_exits_0() {
    let grace = Duration::from_millis(300);
    let mut server = start(&["--shutdown-grace", "300ms", "-v"]);
    let mut silent = connect(server.addr());
    server.wait_for_log(": accepted");

    // Timed from before the signal: the server logs `shutting down` after
    // the signal arrives, so its grace period cannot end sooner than `grace`
    // after this instant. (When this test sees the log line may be later
    // than when it was written, so that moment would give no strict bound.)
    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_log("shutting down");
    assert_refused(server.addr());
    server.wait_for_log("shutdown grace over: cutting off 1 connection");
    // Cut off, not answered: nothing was sent, so there is nothing to reply.
    assert_eq!(read_to_end(&mut silent).expect("end of stream"), b"");

    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(counter(&summary, "shutdown_cut_off"), 1, "{summary}");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= grace,
        "exited {elapsed:?} after the signal, before the {grace:?} grace"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

/// `signal` twice with a client held open and a 60s grace: the second one
/// ends the process at once with 128 + the signal number.
fn second_signal_exits_at_once(signal: &str, code: i32) {
    let mut server = start(&["--shutdown-grace", "60s", "-v"]);
    let mut silent = connect(server.addr());
    server.wait_for_log(": accepted");

    server.signal(signal);
    server.wait_for_log("shutting down");
    assert_refused(server.addr());
    let again = Instant::now();
    server.signal(signal);
    server.wait_for_log(&format!("SIG{signal} again: exiting now"));
    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(counter(&summary, "shutdown_cut_off"), 1, "{summary}");
    assert_eq!(exit_code(&mut server), code, "{}", server.stderr());
    assert!(
        again.elapsed() < Duration::from_secs(20),
        "took {:?}",
        again.elapsed()
    );
    assert_eq!(read_to_end(&mut silent).expect("end of stream"), b"");
}

#[test]
fn second_sigint_during_grace_exits_at_once_with_130() {
    second_signal_exits_at_once("INT", 128 + 2);
}

#[test]
fn second_sigterm_during_grace_exits_at_once_with_143() {
    second_signal_exits_at_once("TERM", 128 + 15);
}

#[test]
fn clients_queued_in_the_backlog_at_sigterm_are_all_served() {
    const CLIENTS: usize = 5;
    let mut server = start(&["--framing", "line", "-v"]);
    let pid = server.child.id();

    // While the process is stopped, the kernel completes the handshakes and
    // queues the clients (and their messages) in the listen backlog; nothing
    // is accepted. The pending SIGTERM is then delivered on SIGCONT, so the
    // server meets a full backlog and a shutdown request together. Closing
    // the listener without accepting first would reset every queued client.
    server.signal("STOP");
    wait_until("revecho to stop", || process_state(pid) == 'T');
    let mut clients = send_lines(server.addr(), CLIENTS, "queued client number");
    server.signal("TERM");
    server.signal("CONT");

    assert_line_replies(&mut clients);
    // Closed, so the server need not linger on them until the grace ends.
    drop(clients);
    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(counter(&summary, "accepted"), CLIENTS as u64, "{summary}");
    assert_eq!(counter(&summary, "replies"), CLIENTS as u64, "{summary}");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
}

/// The same drain, in process, with the order of events pinned down.
///
/// The SIGSTOP test above cannot tell whether the shutdown accepts queued
/// clients before closing the listener: epoll reports ready sources in the
/// order they became ready, and the clients queue (listener ready) before the
/// SIGTERM handler runs on SIGCONT (signal pipe ready), so the listener's
/// event is dispatched first and accepts them the ordinary way. Here the
/// stop request is made first and the clients queue after it, before `run`
/// polls at all: its first poll returns the stop before the listener, so only
/// the accept in the shutdown path can save them from the listener's close.
#[test]
fn a_stop_dispatched_before_the_listener_event_still_serves_the_queued_clients() {
    let mut server = revecho::Server::bind(revecho::Config {
        framing: revecho::Framing::Line,
        ..common::config()
    })
    .expect("bind");
    let addr = server.local_addrs()[0];
    let stats = server.stats();
    server.stop_handle().stop().expect("request a stop");
    let mut clients = send_lines(addr, 5, "queued before the stop ran");
    let running = std::thread::spawn(move || server.run());

    assert_line_replies(&mut clients);
    drop(clients);
    let exit = running.join().expect("server thread").expect("run");
    assert_eq!(exit, revecho::Exit::Finished);
    assert_eq!(stats.snapshot().replies_completed, 5);
}

#[test]
fn clients_queued_past_the_connection_limit_are_served_at_shutdown() {
    // At the limit, new clients wait in the backlog. Closing the listener at
    // shutdown would reset them, so shutdown takes them in even past the
    // limit (the descriptor limit was raised for max_connections + backlog).
    let server = common::TestServer::start(revecho::Config {
        framing: revecho::Framing::Line,
        max_connections: 1,
        shutdown_grace: Duration::from_secs(20),
        ..common::config()
    });
    let silent = connect(server.addr);
    common::wait_until("the silent client to be accepted", || {
        server.snapshot().accepted == 1
    });
    let mut queued = send_lines(server.addr, 3, "waiting past the limit");
    assert_eq!(server.snapshot().accepted, 1, "the limit holds while serving");

    let stats = server.stats.clone();
    let stopping = std::thread::spawn(move || server.stop());
    assert_line_replies(&mut queued);
    // The clients close, so nobody waits out a linger or the grace period;
    // the silent one sends an empty message this way.
    drop(queued);
    drop(silent);
    assert_eq!(stopping.join().expect("stop"), revecho::Exit::Finished);
    assert_eq!(stats.snapshot().accepted, 4);
}

// ---------------------------------------------------------------------------
// Out of descriptors: accept fails with EMFILE
// ---------------------------------------------------------------------------

#[test]
fn accept_backs_off_while_out_of_descriptors_and_serves_the_queue_afterwards() {
    // Before anything can make the server run out of descriptors: every
    // back-off happens after this instant.
    let started = Instant::now();
    // `ulimit -n` in sh lowers both limits, so start-up cannot raise the soft
    // one back: about 30 descriptors remain for clients. Idle and read
    // timeouts are off so that the silent clients hold theirs.
    let mut server = start_under_shell(
        "ulimit -n 40",
        &[
            "--framing",
            "line",
            "--idle-timeout",
            "0",
            "--read-timeout",
            "0",
            "--shutdown-grace",
            "2s",
            "-v",
        ],
    );
    let addr = server.addr();
    server.wait_for_log("open file limit is 40 but --max-connections 10000");

    // Silent clients, one at a time, until one is not accepted. The next
    // accept line is either this client's `accepted` or the failure; one at a time, so the backlog holds exactly one silent client.
    let mut held = Vec::new();
    let mut unaccepted = None;
    for _ in 0..60 {
        let client = connect(addr);
        let line = server.wait_for_log_where("accepted, or accept failed", |line| {
            line.contains("): accepted") || line.contains("] accept on ")
        });
        if line.contains("accept on") && line.contains("failed") {
            assert!(line.contains("too many open files"), "{line}");
            unaccepted = Some(client);
            break;
        }
        let me = client.local_addr().expect("client address");
        assert!(
            line.contains(&format!("({me}): accepted")),
            "expected {me} accepted: {line}"
        );
        held.push(client);
    }
    let Some(unaccepted) = unaccepted else {
        panic!(
            "60 clients were accepted under a limit of 40 descriptors:\n{}",
            server.stderr()
        );
    };

    // Clients with a message, queued behind the silent one.
    let mut queued = send_lines(addr, 5, "queued while starved");

    // Starved: a queued client is neither answered nor dropped (no reply,
    // no end of stream, no reset) while descriptors are out. Waiting for
    // that to hold for 400ms also keeps the server starved long enough for
    // several retries, which must not log the warning again.
    let hold = Duration::from_millis(400);
    let first = &mut queued[0].0;
    first.set_read_timeout(Some(hold)).expect("read timeout");
    let mut byte = [0; 1];
    match first.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a queued client heard from the server while it was starved: {other:?}"),
    }
    first.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    assert_eq!(
        log_count(&server, "accept on"),
        1,
        "warned more than once:\n{}",
        server.stderr()
    );

    // Free ten descriptors. No new client arrives: the retry alone must take
    // the silent client and the five queued ones from the backlog.
    held.drain(..10);
    assert_line_replies(&mut queued);
    server.wait_for_log("accept works again");

    drop((held, unaccepted, queued));
    server.signal("TERM");
    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    let elapsed = started.elapsed();
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());

    // No busy loop: after a failed accept the next try waits for the poll
    // timeout, ACCEPT_BACKOFF (100ms) later, so back-offs are at least that
    // far apart. All of them fall between `started` and the summary, hence
    // at most elapsed / 100ms + 1; one more is allowed for the accept that
    // the shutdown tries before closing the listener, one for rounding.
    // A loop retrying at once would count thousands in the same time.
    let backoffs = counter(&summary, "accept_backoffs");
    let most = (elapsed.as_millis() / ACCEPT_BACKOFF.as_millis()) as u64 + 3;
    assert!(backoffs >= 1, "{summary}");
    assert!(
        backoffs <= most,
        "{backoffs} back-offs in {elapsed:?}, at most {most} expected: {summary}"
    );
}

// ---------------------------------------------------------------------------
// The descriptor limit at start
// ---------------------------------------------------------------------------

#[test]
fn start_up_raises_a_low_soft_limit_as_far_as_max_connections_needs() {
    let wanted = 2000 + 1024 + RESERVE;
    // The child inherits this process's hard limit; `ulimit -S` leaves it.
    let (_, hard) = open_file_limits("self");
    if hard.is_some_and(|hard| hard < wanted) {
        eprintln!("skipped: the hard open file limit ({hard:?}) is below {wanted}");
        return;
    }
    let mut server = start_under_shell("ulimit -S -n 256", &["--max-connections", "2000"]);
    // `listening on` is printed after the limit was raised.
    let (soft, _) = open_file_limits(&server.child.id().to_string());
    assert!(
        soft.is_none_or(|soft| soft >= wanted),
        "soft open file limit is {soft:?}, wanted at least {wanted}"
    );
    server.signal("TERM");
    server.wait_for_log("summary:");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
    assert_eq!(log_count(&server, "open file limit"), 0, "{}", server.stderr());
}

#[test]
fn hard_limit_too_low_warns_at_start_up_but_still_serves() {
    // Soft 100, hard 500: the server raises the soft limit to the hard one,
    // which is still far below the default 10000 connections.
    let (_, hard) = open_file_limits("self");
    if hard.is_some_and(|hard| hard < 500) {
        eprintln!("skipped: the hard open file limit ({hard:?}) is below 500");
        return;
    }
    let mut server = start_under_shell("ulimit -S -n 100; ulimit -H -n 500", &[]);
    let warning = server.wait_for_log("open file limit is 500");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("--max-connections 10000 with --backlog 1024 may need"),
        "{warning}"
    );
    let (soft, hard) = open_file_limits(&server.child.id().to_string());
    assert_eq!((soft, hard), (Some(500), Some(500)));

    assert_eq!(
        common::exchange(server.addr(), b"Hello, world!", false),
        b"!dlrow ,olleH"
    );
    server.signal("TERM");
    server.wait_for_log("summary:");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
}

// ---------------------------------------------------------------------------
// Warnings a client can provoke stay few; the counters stay exact
// ---------------------------------------------------------------------------

#[test]
fn oversize_warnings_are_rate_limited_but_every_refusal_is_counted() {
    const CLIENTS: usize = 12;
    let started = Instant::now();
    let mut server = start(&["--framing", "line", "--max-message", "8"]);
    for _ in 0..CLIENTS {
        let mut client = connect(server.addr());
        client.write_all(b"far more than eight bytes\n").expect("send");
        assert_eq!(read_to_end(&mut client).expect("a clean end of stream"), b"");
    }
    // The clients have closed, so shutdown waits for no one: every refusal
    // is counted before the summary.
    server.signal("TERM");
    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(exit_code(&mut server), 0);
    assert_eq!(counter(&summary, "oversize"), CLIENTS as u64, "{summary}");

    // At most 5 warnings per 10 s window: a hostile client cannot flood the log.
    let warnings = log_count(&server, "closed: sent more than 8 bytes");
    let windows = 1 + (started.elapsed().as_secs() / 10) as usize;
    assert!(warnings >= 1, "{}", server.stderr());
    assert!(
        warnings <= 5 * windows,
        "{warnings} warnings:\n{}",
        server.stderr()
    );
    if windows == 1 {
        assert_eq!(warnings, 5, "{}", server.stderr());
    }
}

#[test]
fn the_connection_limit_warns_once_per_episode_not_on_every_return_to_it() {
    // With one slot and four clients queued, every close lets the next client
    // in and puts the server straight back at its limit: one episode, one
    // warning, ended by one `backlog drained` line.
    let mut server = start(&[
        "--framing",
        "line",
        "--max-connections",
        "1",
        "--linger",
        "0",
        "-v",
    ]);
    let holder = connect(server.addr());
    server.wait_for_log("): accepted");
    let mut queued = send_lines(server.addr(), 4, "queued behind the limit");
    server.wait_for_log("connection limit (1) reached");
    drop(holder);
    assert_line_replies(&mut queued);
    drop(queued);
    server.wait_for_log("backlog drained: below the connection limit again");

    server.signal("TERM");
    let summary = server.wait_for_log("summary:");
    assert_accounted(&summary);
    assert_eq!(exit_code(&mut server), 0);
    assert_eq!(counter(&summary, "accepted"), 5, "{summary}");
    assert_eq!(
        log_count(&server, "connection limit (1) reached"),
        1,
        "{}",
        server.stderr()
    );
}

#[test]
fn filling_the_table_with_nobody_waiting_logs_no_limit_warning() {
    // One client fills `--max-connections 1`, but no one waits behind it:
    // nothing to warn about.
    let mut server = start(&["--framing", "line", "--max-connections", "1"]);
    let mut client = connect(server.addr());
    client.write_all(b"alone\n").expect("send");
    assert_eq!(read_to_end(&mut client).expect("reply"), b"enola\n");
    drop(client);
    server.signal("TERM");
    server.wait_for_log("summary:");
    assert_eq!(exit_code(&mut server), 0);
    assert_eq!(log_count(&server, "connection limit"), 0, "{}", server.stderr());
}

#[test]
fn sequential_exchanges_at_the_connection_limit_keep_the_log_short() {
    // The issue's trial: with `--max-connections 1`, 1,000 ordinary
    // exchanges gave 972 warnings. Every line a client can cause is now
    // rate-limited per kind, so the count no longer grows with the traffic.
    const EXCHANGES: usize = 300;
    let started = Instant::now();
    let mut server = start(&["--framing", "line", "--max-connections", "1"]);
    for _ in 0..EXCHANGES {
        let mut client = connect(server.addr());
        client.write_all(b"ping\n").expect("send");
        assert_eq!(read_to_end(&mut client).expect("reply"), b"gnip\n");
    }
    server.signal("TERM");
    server.wait_for_log("summary:");
    assert_eq!(exit_code(&mut server), 0);
    let windows = 1 + started.elapsed().as_secs() as usize / 10;
    // Per window and kind (limit reached, backlog drained): 5 lines and
    // one report; plus the serving, shutdown and summary lines.
    let bound = 3 + windows * 2 * 6;
    let lines = server.stderr().lines().count();
    assert!(
        lines <= bound,
        "{lines} lines (bound {bound}):\n{}",
        server.stderr()
    );
}

#[test]
fn a_stderr_pipe_nobody_reads_does_not_stop_the_server() {
    // Logging is synchronous: had every exchange logged a line, the 64 KiB
    // pipe would fill (after about 350 exchanges in the issue's trial) and
    // the loop would block in write(2) for good.
    use std::io::BufRead;
    let mut child = revecho()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--framing",
            "line",
            "--max-connections",
            "2",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn revecho");
    // Kept open and never read.
    let _unread_stderr = child.stderr.take().expect("stderr");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .parse()
        .expect("address");
    let holder = connect(addr);
    for _ in 0..1000 {
        let mut client = connect(addr);
        client.write_all(b"ping\n").expect("send");
        assert_eq!(read_to_end(&mut client).expect("reply"), b"gnip\n");
    }
    drop(holder);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_per_ip_flood_is_refused_counted_and_warned_about_a_few_times() {
    const FLOOD: usize = 30;
    let started = Instant::now();
    let mut server = start(&["--framing", "line", "--max-connections-per-ip", "1"]);
    let flooder: std::net::IpAddr = [127, 0, 0, 2].into();
    let holder = connect_from(flooder, server.addr());
    for _ in 0..FLOOD {
        let mut refused = connect_from(flooder, server.addr());
        assert_eq!(read_to_end(&mut refused).expect("end of stream"), b"");
    }
    let mut other = connect(server.addr());
    other.write_all(b"still served\n").expect("send");
    assert_eq!(read_to_end(&mut other).expect("reply"), b"devres llits\n");
    drop(holder);
    server.signal("TERM");
    let summary = server.wait_for_log("summary:");
    assert_eq!(exit_code(&mut server), 0);
    assert_eq!(counter(&summary, "per_ip_limit"), FLOOD as u64, "{summary}");
    let warnings = log_count(&server, "is already at the per-ip limit (1)");
    if started.elapsed() < Duration::from_secs(10) {
        // One window: 5 warnings, and the rest reported at exit in one line.
        assert_eq!(warnings, 5, "{}", server.stderr());
        assert_eq!(
            log_count(
                &server,
                &format!(
                    "{} more \"per-ip limit\" lines suppressed (at most 5 per 10s)",
                    FLOOD - 5
                )
            ),
            1,
            "{}",
            server.stderr()
        );
    } else {
        assert!(warnings <= 5 * (1 + started.elapsed().as_secs() as usize / 10));
    }
}

#[test]
fn max_connections_plus_backlog_beyond_the_token_space_is_a_usage_error() {
    let max = revecho::MAX_CONNECTIONS.to_string();
    let finished = revecho()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            &max,
            "--backlog",
            "2",
        ])
        .output()
        .expect("run revecho");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert_eq!(finished.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "max connections ({max}) plus backlog (2) must be at most {max}"
        )),
        "{stderr}"
    );
    assert_eq!(finished.stdout, b"", "nothing was bound");
}

#[test]
fn max_connections_per_ip_can_come_from_its_variable() {
    let finished = revecho()
        .args(["--listen", "127.0.0.1:0"])
        .env("REVECHO_MAX_CONNECTIONS_PER_IP", "banana")
        .output()
        .expect("run revecho");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert_eq!(finished.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-connections-per-ip"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Counters on demand
// ---------------------------------------------------------------------------

#[test]
fn sigusr1_prints_the_counters_on_stdout_at_any_log_level_and_keeps_serving() {
    // -q: the line is not a log record, so no log level hides it.
    let mut server = start(&["-q", "--framing", "line"]);
    let addr = server.addr();
    // Connected first, so accepted before the client served next.
    let mut silent = connect(addr);
    assert_eq!(
        common::exchange(addr, b"Hello, world!\n", false),
        b"!dlrow ,olleH\n"
    );

    server.signal("USR1");
    let stats = server.next_stdout_line();
    assert!(stats.starts_with("stats: open="), "{stats}");
    assert_eq!(counter(&stats, "accepted"), 2, "{stats}");
    assert_eq!(counter(&stats, "replies"), 1, "{stats}");
    // The silent client is open; the served one may still be lingering.
    assert!(counter(&stats, "open") >= 1, "{stats}");
    assert_accounted(&stats);

    // Still serving, and the signal can come again.
    silent.write_all(b"still here\n").expect("send");
    assert_eq!(read_to_end(&mut silent).expect("reply"), b"ereh llits\n");
    server.signal("USR1");
    let again = server.next_stdout_line();
    assert_eq!(counter(&again, "replies"), 2, "{again}");
    assert_accounted(&again);
    // Not a log record: nothing of it on stderr.
    assert!(!server.stderr().contains("stats:"), "{}", server.stderr());

    server.signal("TERM");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
}

#[test]
fn sigusr1_with_workers_prints_one_line_summed_over_every_worker() {
    const CLIENTS: u64 = 12;
    let mut server = start(&["-q", "--workers", "2", "--framing", "line"]);
    let addr = server.addr();
    for _ in 0..CLIENTS {
        assert_eq!(common::exchange(addr, b"ping\n", false), b"gnip\n");
    }
    server.signal("USR1");
    let stats = server.next_stdout_line();
    assert!(stats.starts_with("stats: open="), "{stats}");
    // Whichever worker took each client, the line counts them all.
    assert_eq!(counter(&stats, "accepted"), CLIENTS, "{stats}");
    assert_eq!(counter(&stats, "replies"), CLIENTS, "{stats}");
    assert_accounted(&stats);
    server.signal("TERM");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
}

// ---------------------------------------------------------------------------
// --workers N: one loop per core, one shutdown path, one summary
// ---------------------------------------------------------------------------

/// Waits until `count` stderr lines contain `needle`.
fn wait_for_log_count(server: &RunningBinary, needle: &str, count: usize) {
    wait_until(&format!("{count} lines with {needle:?}"), || {
        log_count(server, needle) >= count
    });
}

#[test]
fn workers_drain_in_flight_clients_on_sigterm_and_log_one_summed_summary() {
    const CLIENTS: usize = 8;
    let mut server = start(&[
        "--workers",
        "2",
        "--framing",
        "eof",
        "--shutdown-grace",
        "10s",
        "-vv",
    ]);
    // Eight clients in flight: the kernel spreads them between the two
    // workers' sockets (all on one worker has odds of 1 in 128, and the
    // test holds then too).
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.addr())).collect();
    for client in &mut clients {
        client.write_all(b"Hello, ").expect("send first part");
    }
    wait_for_log_count(&server, "read: 7 bytes", CLIENTS);

    server.signal("TERM");
    server.wait_for_log("SIGTERM: shutting down 2 workers");
    // Both workers have closed their listeners.
    wait_for_log_count(&server, "stop requested: shutting down", 2);
    assert_refused(server.addr());

    for client in &mut clients {
        client.write_all(b"world!").expect("send the rest");
        client.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(client).expect("reply"), b"!dlrow ,olleH");
    }
    let summary = server.wait_for_log("summary:");
    assert_eq!(counter(&summary, "accepted"), CLIENTS as u64, "{summary}");
    assert_eq!(counter(&summary, "replies"), CLIENTS as u64, "{summary}");
    assert_eq!(exit_code(&mut server), 0, "{}", server.stderr());
    assert_eq!(log_count(&server, "summary:"), 1, "{}", server.stderr());
}

#[test]
fn workers_exit_at_once_on_a_second_signal_with_143() {
    let mut server = start(&["--workers", "2", "--shutdown-grace", "60s", "-v"]);
    let mut silent = connect(server.addr());
    server.wait_for_log(": accepted");
    server.signal("TERM");
    wait_for_log_count(&server, "stop requested: shutting down", 2);
    server.signal("TERM");
    server.wait_for_log("SIGTERM again: exiting now");
    let summary = server.wait_for_log("summary:");
    assert_eq!(counter(&summary, "shutdown_cut_off"), 1, "{summary}");
    assert_eq!(exit_code(&mut server), 128 + 15, "{}", server.stderr());
    assert_eq!(read_to_end(&mut silent).expect("end of stream"), b"");
}

/// Starts `revecho --workers WORKERS` on `address` and expects it to fail
/// with "address already in use".
fn assert_address_in_use(address: SocketAddr, workers: &str) {
    let output = revecho()
        .args(["--listen", &address.to_string(), "--workers", workers])
        .output()
        .expect("run revecho");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on {address}: address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn a_single_revecho_beside_workers_fails_with_address_in_use_both_ways() {
    // Workers set SO_REUSEPORT; a single revecho does not, and Linux lets a
    // port be shared only when every socket on it set the option.
    let workers = start(&["--workers", "2"]);
    assert_address_in_use(workers.addr(), "1");
    let single = start(&[]);
    assert_address_in_use(single.addr(), "2");
}

#[test]
fn a_second_revecho_with_workers_shares_the_port_silently() {
    // The documented price of SO_REUSEPORT: two sets of workers on one
    // port both bind, and the kernel splits the clients between them.
    let first = start(&["--workers", "2"]);
    let mut command = revecho();
    command.args(["--listen", &first.addr().to_string(), "--workers", "2"]);
    let mut second = RunningBinary::start(command, 1);
    assert_eq!(second.addr(), first.addr());
    second.signal("TERM");
    assert_eq!(exit_code(&mut second), 0, "{}", second.stderr());
}
