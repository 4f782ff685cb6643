//! The bodies of the fuzz targets in `fuzz/`, as plain functions on bytes.
//!
//! A fuzz target is a function that takes arbitrary bytes and panics when
//! an invariant breaks. Keeping the bodies here, in the library, and not in
//! the fuzz crate, means two things run the very same code: libFuzzer
//! through `fuzz/fuzz_targets/*.rs` (which needs its instrumentation flags
//! and never builds in `cargo test`), and `tests/fuzz_corpus.rs`, which
//! replays every committed corpus and crash input through these functions
//! on the stable toolchain. They are reachable as `revecho::internals::fuzz`.
//!
//! - `connection`: the bytes become a `Script` of read results and
//!   write capacities that drives one `Connection` from accept to close;
//!   `check` runs it and asserts every invariant against a small model of
//!   what the client must get. The property tests in
//!   `src/connection/properties.rs` run the same `check` on scripts that
//!   proptest generates.
//! - `framing`: `scan` and `into_reply` on arbitrary bytes and limits.
//! - `proxy_protocol`: the PROXY protocol header parser.
//!
//! Everything here panics on purpose, to report a broken invariant; none of
//! it is on the server's path.

mod check;
mod model;
mod script;

pub use check::check;
pub use model::{Expected, expect};
pub use script::{ReadStep, Script, Setup, Then, WriteStep};

use crate::Framing;
use crate::framing::{Scan, into_reply, scan};
use crate::proxy_protocol::{self, MAX_V1_LENGTH, MAX_V2_PAYLOAD, Parse, V2_FIXED_LENGTH};

/// The `connection` target: `data` becomes a `Script` (see
/// `Script::from_bytes`) and `check` runs it.
pub fn connection(data: &[u8]) {
    check(&Script::from_bytes(data));
}

/// The `framing` target. The first byte picks the framing, the next two the
/// limit (little-endian; `0xFFFF` stands for no limit at all,
/// `usize::MAX`), the fourth where the bytes are split into two reads; the
/// rest are the bytes received.
///
/// Checks that `scan` agrees with a client sending one byte at a time, that
/// scanning in two pieces agrees with scanning at once, and that the reply
/// is the message reversed, a line's terminator kept at the end.
pub fn framing(data: &[u8]) {
    let (header, received) = data.split_at(data.len().min(4));
    let byte = |index: usize| header.get(index).copied().unwrap_or(0);
    let framing = [Framing::Burst, Framing::Line, Framing::Eof][usize::from(byte(0) % 3)];
    let max_message = match u16::from_le_bytes([byte(1), byte(2)]) {
        u16::MAX => usize::MAX,
        limit => usize::from(limit),
    };
    let split = usize::from(byte(3)) % (received.len() + 1);

    let whole = scan(framing, received, 0, max_message);
    let expected = scan_one_byte_at_a_time(framing, received, max_message);
    assert_eq!(
        whole,
        expected,
        "{framing} scan of {} bytes, limit {max_message}",
        received.len()
    );

    // As the connection does: scan what the first read brought, and if that
    // is not decided, scan again after the second read from where it left.
    let pieces = match scan(framing, &received[..split], 0, max_message) {
        Scan::Incomplete => scan(framing, received, split, max_message),
        decided => decided,
    };
    assert_eq!(pieces, whole, "{framing} scan split at {split}");

    // The message is what the connection would reply to: a line up to its
    // terminator, otherwise everything (a burst, or bytes up to end of stream).
    let message = match whole {
        Scan::Complete { len } => &received[..len],
        Scan::Incomplete | Scan::Oversize => received,
    };
    let reply = into_reply(framing, message.to_vec());
    let terminator = match framing {
        Framing::Line if message.ends_with(b"\r\n") => 2,
        Framing::Line if message.ends_with(b"\n") => 1,
        _ => 0,
    };
    let content = message.len() - terminator;
    assert_eq!(reply.len(), message.len(), "a reply is as long as its message");
    assert!(
        reply[..content].iter().eq(message[..content].iter().rev()),
        "the content comes back reversed"
    );
    assert_eq!(
        reply[content..],
        message[content..],
        "the terminator stays at the end"
    );
}

/// What `scan` must say, worked out as if the bytes arrived one at a time:
/// the first newline ends a line, and the first byte past the limit without
/// one makes the message oversize.
fn scan_one_byte_at_a_time(framing: Framing, received: &[u8], max_message: usize) -> Scan {
    for (index, &byte) in received.iter().enumerate() {
        let len = index + 1;
        if framing == Framing::Line && byte == b'\n' {
            return if len > max_message {
                Scan::Oversize
            } else {
                Scan::Complete { len }
            };
        }
        if len > max_message {
            return Scan::Oversize;
        }
    }
    Scan::Incomplete
}

/// The `proxy_protocol` target: the PROXY header parser on arbitrary bytes.
///
/// Checks that a complete header is decided by its own bytes (whatever
/// follows is the client's), and that one byte less is still only
/// incomplete; that a decision on a prefix stands once more bytes arrive;
/// that the parser never waits past its bound; and that every refusal
/// displays as one short line.
pub fn proxy_protocol(data: &[u8]) {
    let whole = proxy_protocol::parse(data);
    match &whole {
        Parse::Complete { header_len, .. } => {
            let header_len = *header_len;
            assert!(
                (1..=data.len()).contains(&header_len),
                "header of {header_len} bytes in {} bytes",
                data.len()
            );
            assert_eq!(
                proxy_protocol::parse(&data[..header_len]),
                whole,
                "the header alone decides"
            );
            assert_eq!(
                proxy_protocol::parse(&data[..header_len - 1]),
                Parse::Incomplete,
                "one byte short of a header is incomplete, not refused"
            );
        }
        Parse::Incomplete => {
            let bound = if data.first() == Some(&b'P') {
                MAX_V1_LENGTH
            } else {
                V2_FIXED_LENGTH + MAX_V2_PAYLOAD
            };
            assert!(
                data.len() < bound,
                "still waiting after {} bytes (bound {bound})",
                data.len()
            );
        }
        Parse::Malformed(reason) => {
            let text = reason.to_string();
            assert!(
                text.len() <= 80 && !text.contains('\n'),
                "a refusal is one short line: {text:?}"
            );
        }
    }
    // The header may arrive in pieces: a decision made on the first piece
    // must be the decision on the whole.
    for prefix in [data.len() / 2, data.len().saturating_sub(1)] {
        match proxy_protocol::parse(&data[..prefix]) {
            Parse::Incomplete => {}
            decided => assert_eq!(decided, whole, "decided at {prefix} bytes, then changed"),
        }
    }
}
