//! The docs, checked against the real binary, so that they stay true.
//!
//! - Every transcript in `docs/walkthrough.md` is replayed: the `revecho`
//!   binary serves in a child process, the real `revecho send` client talks
//!   to it, and what they print is compared with the doc.
//! - The flag table in `README.md` is compared with `revecho --help` and
//!   `revecho send --help`: every flag, with its default and its variable.
//! - The README's first lines hold the two set-up commands.
//!
//! # How a transcript is marked
//!
//! An HTML comment names the fenced block that follows it:
//!
//! ````text
//! <!-- transcript: seed-server -->
//! ```console
//! $ revecho -v
//! listening on 127.0.0.1:7342
//! ...
//! ```
//! ````
//!
//! The first line is the command, which must be exactly the one the test
//! runs (the test adds only `--listen 127.0.0.1:0` or `--connect ADDR`,
//! because tests never use a fixed port). The other lines are the output:
//! for the server, its stdout (`listening on`) and then its log; for a
//! client, its stderr and then its stdout. A line `^C` marks where the
//! server got SIGINT.
//!
//! # What may differ, and what is compared
//!
//! - Volatile parts are normalized on both sides: timestamps become
//!   `<time>`, the server's address becomes `<server>` (in the doc it is
//!   `127.0.0.1:7342`, or `[::1]:7342`), any other address `<client>`, and
//!   how long `poll` slept (`poll: slept 1.2ms, …`) `<duration>`. These
//!   rules, the marking of blocks and the matching of excerpts live in
//!   `tests/common/transcript.rs`, shared with `tests/experiments.rs`.
//! - Most scenarios are deterministic line for line: the client sends its
//!   whole message in one write, so on loopback it arrives as one segment,
//!   and the server's `--read-chunk` alone decides how it is split; the
//!   server's writes all fit in the kernel at once. Those transcripts are
//!   compared exactly. The client in the server-side scenarios runs with
//!   `--keep-open`, as the seed's did: a half-close could arrive with the
//!   message or after it, and the server's log would depend on which.
//! - One race is real and the walkthrough explains it: after the reply the
//!   server's first lingering read can come before or after the client's
//!   close reaches it. Before, that read says `would block (lingering)` and
//!   a wakeup (`poll: …`) with an event `readable | read closed | ...`
//!   follows; after, the read returns 0 at once. Those lines are left out
//!   on both sides.
//! - The partial-write transcript is an excerpt: its sizes depend on how
//!   the kernel sizes its buffers. It is checked as a subsequence of the
//!   real log with every number but 0 replaced by `N`, and its `...` lines
//!   skipped. One line of it is checked apart: the change of interest to
//!   WRITABLE is logged when a turn ends, and the first turn in `Sending`
//!   may end by yielding (before any `would block`) or at the `would
//!   block`, so the excerpt's order around it is only one of two; what is
//!   certain, and checked, is that it comes after `Receiving => Sending`
//!   and before the first `writable` event.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Output, Stdio};

use common::transcript::{
    assert_between, assert_in_order, is_elision, marked_blocks, normalize, normalize_doc, numbers_as_n,
    read_doc,
};
use common::{PATIENCE, RunningBinary, revecho};
use socket2::{Domain, Protocol, Socket, Type};

// ---------------------------------------------------------------------------
// The walkthrough's transcripts
// ---------------------------------------------------------------------------

#[test]
fn the_seed_exchange_at_debug_level_matches_the_walkthrough() {
    let blocks = walkthrough_blocks();
    let run = Scenario {
        server_command: "$ revecho -v",
        server_args: &["-v"],
        client_command: "$ revecho send --keep-open \"Hello, world!\"",
        client_args: &["--keep-open", "Hello, world!"],
        client_stdin: None,
    }
    .run(&blocks["seed-server"], &blocks["seed-client"]);
    assert_same(
        "seed-server",
        &without_lingering_race(&normalize_doc(&blocks["seed-server"][1..])),
        &without_lingering_race(&run.server_lines()),
    );
    assert_same(
        "seed-client",
        &normalize_doc(&blocks["seed-client"][1..]),
        &run.client_lines(),
    );
}

#[test]
fn a_message_in_several_reads_and_a_reply_in_several_writes_match_the_walkthrough() {
    let blocks = walkthrough_blocks();
    let run = Scenario {
        server_command: "$ revecho -vv --framing line --read-chunk 4 --write-chunk 3",
        server_args: &[
            "-vv",
            "--framing",
            "line",
            "--read-chunk",
            "4",
            "--write-chunk",
            "3",
        ],
        client_command: "$ printf 'Hello, world!\\n' | revecho send --keep-open",
        client_args: &["--keep-open"],
        client_stdin: Some(b"Hello, world!\n"),
    }
    .run(&blocks["chunks-server"], &blocks["chunks-client"]);
    assert_same(
        "chunks-server",
        &without_lingering_race(&normalize_doc(&blocks["chunks-server"][1..])),
        &without_lingering_race(&run.server_lines()),
    );
    assert_same(
        "chunks-client",
        &normalize_doc(&blocks["chunks-client"][1..]),
        &run.client_lines(),
    );
}

#[test]
fn the_client_trace_matches_the_walkthrough() {
    let blocks = walkthrough_blocks();
    let block = &blocks["send-trace"];
    assert_eq!(
        block[0], "$ revecho send --trace \"Hello, world!\"",
        "send-trace: the command changed"
    );
    let server = RunningBinary::start(with_free_port(revecho()), 1);
    let output = send(server.addr(), &["--trace", "Hello, world!"], None);
    let actual = client_lines(&output, server.addr());
    assert_same("send-trace", &normalize_doc(&block[1..]), &actual);
}

/// The excerpt of a log with partial writes. The client is the one of
/// `examples/slow_reader.rs`, except that instead of waiting a second it
/// starts reading once the server has logged its first `would block`: so
/// the first full send buffer always comes before any reading, and that
/// line always comes before the first `writable`. Later cycles depend on
/// how fast the client drains, so the excerpt shows only the first one.
#[test]
fn the_partial_write_excerpt_appears_in_a_real_log() {
    const MESSAGE_SIZE: usize = 8 * 1024 * 1024;
    let blocks = walkthrough_blocks();
    let block = &blocks["partial-writes"];
    assert_eq!(
        block[0], "$ revecho -vv --framing eof --max-message 16MiB",
        "partial-writes: the command changed"
    );
    let mut command = with_free_port(revecho());
    command.args(["-vv", "--framing", "eof", "--max-message", "16MiB"]);
    let mut server = RunningBinary::start(command, 1);

    let message: Vec<u8> = (0..MESSAGE_SIZE).map(|i| (i % 251) as u8).collect();
    // A small receive buffer keeps the TCP window small, so the server's
    // send buffer fills up (see examples/slow_reader.rs).
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&server.addr().into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    client.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    client.write_all(&message).expect("send the message");
    client.shutdown(Shutdown::Write).expect("half-close");
    server.wait_for_log("write: would block");
    let mut reply = Vec::with_capacity(MESSAGE_SIZE);
    let mut chunk = [0u8; 4096];
    loop {
        match client.read(&mut chunk).expect("read the reply") {
            0 => break,
            n => reply.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        reply.iter().eq(message.iter().rev()),
        "the reply is not the reversed message"
    );
    drop(client);

    server.wait_for_log("): closed");
    server.signal("INT");
    server.wait_for_log("summary:");
    assert_eq!(server.wait().code(), Some(0), "exit status after SIGINT");
    let log: Vec<String> = server_lines(&server)
        .iter()
        .map(|line| numbers_as_n(line))
        .collect();
    let (to_writable, excerpt): (Vec<String>, Vec<String>) = normalize_doc(&block[1..])
        .iter()
        .filter(|line| !is_elision(line))
        .map(|line| numbers_as_n(line))
        .partition(|line| line.contains("interest READABLE => WRITABLE"));
    assert_eq!(
        to_writable.len(),
        1,
        "partial-writes: the excerpt should show the change of interest to WRITABLE once"
    );
    assert_between(
        "partial-writes",
        "docs/walkthrough.md",
        &to_writable[0],
        &log,
        "Receiving => Sending",
        "writable: writing the rest of the reply",
    );
    assert!(
        excerpt.len() >= 8,
        "partial-writes: the excerpt is unexpectedly short"
    );
    assert_in_order("partial-writes", "docs/walkthrough.md", &excerpt, &log);
}

// ---------------------------------------------------------------------------
// The README
// ---------------------------------------------------------------------------

#[test]
fn the_readme_opens_with_the_two_set_up_commands() {
    let readme = read_doc("README.md");
    let opening: String = readme.lines().take(15).collect::<Vec<_>>().join("\n");
    for command in ["cargo run --release", "cargo test"] {
        assert!(
            opening.contains(command),
            "the README's first lines must show `{command}`:\n{opening}"
        );
    }
}

#[test]
fn the_readme_flag_table_lists_every_flag_with_its_default() {
    let readme = read_doc("README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter(|line| line.trim_start().starts_with('|'))
        .collect();
    let mut checked = 0;
    for help_args in [&["--help"][..], &["send", "--help"][..]] {
        let help = help_text(help_args);
        for flag in parse_help(&help) {
            let row = rows
                .iter()
                .find(|row| names_flag(row, &flag.long))
                .unwrap_or_else(|| panic!("README has no table row for {}", flag.long));
            if let Some(default) = &flag.default {
                assert!(
                    row.contains(&format!("`{default}`")),
                    "README row for {} should give the default `{default}`:\n{row}",
                    flag.long
                );
            }
            if let Some(variable) = &flag.env {
                assert!(
                    row.contains(&format!("`{variable}`")),
                    "README row for {} should name `{variable}`:\n{row}",
                    flag.long
                );
            }
            checked += 1;
        }
    }
    // A parser that found nothing would pass vacuously.
    assert!(checked >= 15, "only {checked} flags found in --help");
}

/// Whether the first cell of a table row names `flag` (`--listen` in
/// `` `-l, --listen ADDR` ``, but not `--timeout` in `--read-timeout`).
fn names_flag(row: &str, flag: &str) -> bool {
    let first_cell = row
        .trim_start()
        .trim_start_matches('|')
        .split('|')
        .next()
        .unwrap_or_default();
    first_cell.match_indices(flag).any(|(at, _)| {
        let before = first_cell[..at].chars().next_back();
        let after = first_cell[at + flag.len()..].chars().next();
        matches!(before, None | Some(' ' | '`' | ',')) && matches!(after, None | Some(' ' | '`' | ','))
    })
}

/// One option from `--help`.
#[derive(Debug)]
struct HelpFlag {
    long: String,
    default: Option<String>,
    env: Option<String>,
}

/// Reads the options out of clap's help (long or short form).
fn parse_help(help: &str) -> Vec<HelpFlag> {
    let mut flags: Vec<HelpFlag> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Options start at column 2 (`-l, --listen`) or 6 (`--framing`);
        // possible values and descriptions are indented further.
        if (indent == 2 || indent == 6) && trimmed.starts_with('-') {
            let long = trimmed
                .split_whitespace()
                .find(|word| word.starts_with("--"))
                .map(|word| word.trim_end_matches("...").trim_end_matches(','));
            if let Some(long) = long
                && long != "--help"
                && long != "--version"
            {
                flags.push(HelpFlag {
                    long: long.to_string(),
                    default: None,
                    env: None,
                });
            }
        }
        let Some(flag) = flags.last_mut() else { continue };
        if let Some(default) = bracketed(line, "[default: ") {
            flag.default = Some(default);
        }
        if let Some(env) = bracketed(line, "[env: ") {
            flag.env = Some(
                env.trim_end_matches('=')
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    flags
}

/// The text between `prefix` and the next `]`.
fn bracketed(line: &str, prefix: &str) -> Option<String> {
    let start = line.find(prefix)? + prefix.len();
    let end = line[start..].find(']')? + start;
    Some(line[start..end].to_string())
}

fn help_text(args: &[&str]) -> String {
    let output = revecho().args(args).output().expect("run revecho --help");
    assert!(output.status.success(), "revecho {args:?} failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

// ---------------------------------------------------------------------------
// Running a scenario
// ---------------------------------------------------------------------------

/// One server and one `revecho send`, as in two terminals.
struct Scenario<'a> {
    /// The first line of the server block, as the doc must show it.
    server_command: &'a str,
    server_args: &'a [&'a str],
    /// The first line of the client block.
    client_command: &'a str,
    /// Arguments after `send --connect ADDR`.
    client_args: &'a [&'a str],
    client_stdin: Option<&'a [u8]>,
}

struct Run {
    server: RunningBinary,
    client: Output,
}

impl Scenario<'_> {
    /// Serves, sends one message, waits for the connection to close, sends
    /// SIGINT (the doc's `^C`) and waits for the exit.
    fn run(&self, server_block: &[String], client_block: &[String]) -> Run {
        assert_eq!(
            server_block[0], self.server_command,
            "the server command in the doc changed"
        );
        assert_eq!(
            client_block[0], self.client_command,
            "the client command in the doc changed"
        );
        assert!(
            server_block.iter().any(|line| line == "^C"),
            "the server block should show where Ctrl-C was pressed"
        );
        let mut command = with_free_port(revecho());
        command.args(self.server_args);
        let mut server = RunningBinary::start(command, 1);
        let client = send(server.addr(), self.client_args, self.client_stdin);
        // The last line about the connection: after it, nothing else
        // happens until the signal.
        server.wait_for_log("): closed");
        server.signal("INT");
        server.wait_for_log("summary:");
        let status: ExitStatus = server.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "a graceful shutdown exits 0:\n{}",
            server.stderr()
        );
        Run { server, client }
    }
}

impl Run {
    fn server_lines(&self) -> Vec<String> {
        server_lines(&self.server)
    }

    fn client_lines(&self) -> Vec<String> {
        client_lines(&self.client, self.server.addr())
    }
}

/// The server's terminal: `listening on` lines (stdout), then its log
/// (stderr), normalized. A warning about a low descriptor limit depends on
/// the machine, not on revecho, so it is left out.
fn server_lines(server: &RunningBinary) -> Vec<String> {
    let mut lines: Vec<String> = server
        .addrs
        .iter()
        .map(|addr| format!("listening on {addr}"))
        .collect();
    lines.extend(
        server
            .stderr()
            .lines()
            .filter(|line| !line.contains("open file limit"))
            .map(str::to_string),
    );
    lines
        .iter()
        .map(|line| normalize(line, &[&server.addr().to_string()]))
        .collect()
}

/// The client's terminal: its stderr, then its stdout, normalized.
fn client_lines(output: &Output, server: SocketAddr) -> Vec<String> {
    assert!(
        output.status.success(),
        "revecho send failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    stderr
        .lines()
        .chain(stdout.lines())
        .map(|line| normalize(line, &[&server.to_string()]))
        .collect()
}

/// Runs `revecho send --connect ADDR ARGS`, feeding `stdin` if given.
fn send(server: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = revecho();
    command
        .args(["send", "--connect", &server.to_string(), "--timeout", "20s"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn revecho send");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write stdin");
        // Dropping the pipe is the end of input `send` reads to.
    }
    // `send` gives up by itself after its --timeout, so this cannot hang.
    child.wait_with_output().expect("wait for revecho send")
}

fn with_free_port(mut command: Command) -> Command {
    command.args(["--listen", "127.0.0.1:0"]);
    command
}

// ---------------------------------------------------------------------------
// The walkthrough's own rules (the shared ones are in tests/common/transcript.rs)
// ---------------------------------------------------------------------------

/// The marked blocks of the walkthrough, by name: each is its lines, the
/// command first.
fn walkthrough_blocks() -> HashMap<String, Vec<String>> {
    let blocks = marked_blocks("docs/walkthrough.md", "transcript");
    for name in [
        "seed-server",
        "seed-client",
        "send-trace",
        "chunks-server",
        "chunks-client",
        "partial-writes",
    ] {
        assert!(
            blocks.contains_key(name),
            "docs/walkthrough.md has no transcript {name}"
        );
    }
    blocks
}

/// Leaves out the lines of the one race the walkthrough explains: whether
/// the first lingering read comes before the client's close (then it would
/// block, and a wakeup with an event `read closed` follows) or after it.
fn without_lingering_race(lines: &[String]) -> Vec<String> {
    let is_race = |index: usize| {
        let line = &lines[index];
        let next = lines.get(index + 1);
        line.contains("read: would block (lingering)")
            || line.contains("read closed")
            || (line.contains("poll: slept") && next.is_some_and(|next| next.contains("read closed")))
    };
    (0..lines.len())
        .filter(|&index| !is_race(index))
        .map(|index| lines[index].clone())
        .collect()
}

/// Equality with both sides printed, so a failing run shows what changed.
fn assert_same(name: &str, doc: &[String], actual: &[String]) {
    assert!(
        doc == actual,
        "{name}: docs/walkthrough.md no longer matches the binary\n--- doc (normalized)\n{}\n--- actual (normalized)\n{}",
        doc.join("\n"),
        actual.join("\n")
    );
}
