//! Reading console transcripts out of the docs and normalizing log lines,
//! so that a test can compare a page with what the real binary printed.
//!
//! One implementation for every page checked this way: the walkthrough
//! (`tests/docs.rs`) and the experiments (`tests/experiments.rs`).
//!
//! - A block is marked by an HTML comment, `<!-- KIND: NAME -->`, followed
//!   by a fenced block whose first line is the command (`$ …`).
//! - Timestamps become `<time>`, the server's address `<server>` (in the
//!   docs it is `127.0.0.1:7342` or `[::1]:7342`), any other socket address
//!   `<client>`, and how long `poll` slept (`poll: slept 1.2ms, …`)
//!   `<duration>`.
//! - Where sizes depend on the kernel's buffers, every number but a lone 0
//!   becomes `N` ([`numbers_as_n`]), and `...` lines mark left-out lines.
//! - An excerpt matches when its lines appear in the real output in the same
//!   order ([`assert_in_order`]). A line whose place among its neighbours
//!   depends on timing is checked apart, between two lines that certainly
//!   come before and after it ([`assert_between`]).

use std::collections::HashMap;
use std::path::Path;

/// Where the server listens in every transcript of the docs.
pub const DOC_SERVER: &str = "127.0.0.1:7342";
pub const DOC_SERVER_V6: &str = "[::1]:7342";

/// A file of the repository, as text.
pub fn read_doc(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The blocks of `relative` marked `<!-- KIND: NAME -->`, by name: each is
/// its lines, the command first.
pub fn marked_blocks(relative: &str, kind: &str) -> HashMap<String, Vec<String>> {
    let text = read_doc(relative);
    let prefix = format!("<!-- {kind}:");
    let mut blocks = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_suffix("-->"))
            .map(str::trim)
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{relative}, {kind} {name}: a fenced block must follow the marker"
        );
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|line| !line.starts_with("```"))
            .map(str::to_string)
            .collect();
        assert!(
            body.first().is_some_and(|first| first.starts_with("$ ")),
            "{relative}, {kind} {name}: the first line must be the command"
        );
        assert!(
            blocks.insert(name.to_string(), body).is_none(),
            "{relative}, {kind} {name} appears twice"
        );
    }
    blocks
}

/// A doc block's output lines, normalized as the real output will be.
pub fn normalize_doc(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| *line != "^C")
        .map(|line| normalize(line, &[DOC_SERVER, DOC_SERVER_V6]))
        .collect()
}

/// Replaces the timestamp, the server's address, any other socket
/// address and how long `poll` slept with placeholders.
pub fn normalize(line: &str, server: &[&str]) -> String {
    let mut line = line.to_string();
    // env_logger's `[2026-11-26T16:39:50.302Z INFO  revecho::server]`.
    if line.starts_with("[2")
        && let Some(space) = line.find(' ')
    {
        line.replace_range(1..space, "<time>");
    }
    // `poll: slept 1.2ms, woke by …`.
    if let Some(at) = line.find("poll: slept ").map(|at| at + "poll: slept ".len())
        && let Some(comma) = line[at..].find(',')
    {
        line.replace_range(at..at + comma, "<duration>");
    }
    for server in server {
        line = line.replace(server, "<server>");
    }
    replace_addresses(&line, "<client>")
}

/// Replaces every `a.b.c.d:port` and `[v6]:port` in `line`.
pub fn replace_addresses(line: &str, with: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = address_at(&line[i..]) {
            out.push_str(with);
            i += len;
        } else {
            let c = line[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a socket address at the start of `text`, if one is there.
fn address_at(text: &str) -> Option<usize> {
    let host_len = if let Some(rest) = text.strip_prefix('[') {
        let close = rest.find(']')?;
        let inside = &rest[..close];
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        close + 2
    } else {
        let candidate: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts: Vec<&str> = candidate.split('.').collect();
        if parts.len() != 4 || parts.iter().any(|part| part.is_empty() || part.len() > 3) {
            return None;
        }
        candidate.len()
    };
    let port_len = text[host_len..]
        .strip_prefix(':')?
        .chars()
        .take_while(char::is_ascii_digit)
        .count();
    (port_len > 0).then_some(host_len + 1 + port_len)
}

/// Every number except a lone 0 becomes `N`: sizes that depend on the
/// kernel's buffers.
pub fn numbers_as_n(line: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in line.chars().chain(std::iter::once('\u{0}')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            out.push_str(if digits == "0" { "0" } else { "N" });
            digits.clear();
        }
        if c != '\u{0}' {
            out.push(c);
        }
    }
    out
}

/// A line that stands for left-out lines.
pub fn is_elision(line: &str) -> bool {
    matches!(line.trim(), "..." | "…")
}

/// Checks that the lines of `excerpt`, taken from `page`, appear in `actual`
/// in the same order; other lines may come between them.
pub fn assert_in_order(name: &str, page: &str, excerpt: &[String], actual: &[String]) {
    let mut rest = actual.iter();
    for line in excerpt {
        assert!(
            rest.any(|candidate| candidate == line),
            "{name}: {page} shows {line:?}, which does not appear (in this order) in the real output:\n{}",
            actual.join("\n")
        );
    }
}

/// Checks that `line`, taken from `page`, appears in `actual` after the
/// first line that contains `after` and before the first that contains
/// `before`: for a line whose order among its neighbours depends on timing,
/// but not its place between those two.
pub fn assert_between(name: &str, page: &str, line: &str, actual: &[String], after: &str, before: &str) {
    let position = |wanted: &str| {
        actual
            .iter()
            .position(|candidate| candidate.contains(wanted))
            .unwrap_or_else(|| panic!("{name}: no {wanted:?} in the real output:\n{}", actual.join("\n")))
    };
    let (start, end) = (position(after), position(before));
    assert!(
        actual[start..end].iter().any(|candidate| candidate == line),
        "{name}: {page} shows {line:?}, which should appear between {after:?} and {before:?} in the real output:\n{}",
        actual.join("\n")
    );
}
