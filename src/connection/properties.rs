//! Properties of the connection state machine under any script: proptest
//! picks what every read returns (bytes, `WouldBlock`, `Interrupted`, end
//! of stream, errors), what every write takes (0 to n bytes,
//! `WouldBlock`, `Interrupted`, errors), whether `shutdown(Write)` fails,
//! how the client ends once the script runs out (end of stream, silence
//! until the deadline, or the shutdown cut-off), and the settings:
//! `max_message` small enough to overflow, `read_chunk` and `write_chunk`
//! small enough to cut everything into pieces, lingering on or off.
//!
//! The harness and the invariants are `crate::fuzz_entry::check`, the same
//! code the `connection` fuzz target runs: it never panics; a completed
//! reply is exactly the reversal of the framed message, which a small model
//! derives from the script; the connection always ends closed, for the
//! model's reason; the buffered message never exceeds `max_message + 1`
//! and no read asks for more; a reply cut off part-way ends in an abortive
//! close and a complete one never does; no turn makes more than
//! `TURN_CALLS` calls. A shrunk failure prints as a story:
//! `reads: [Read(b"a\n"), WouldBlock, Eof], writes: [Write(1)]`.
//!
//! The two properties in `tests.rs` (`any_schedule`) stay: they pin the
//! happy path (every schedule of a well-behaved client gets its exact
//! reply), and these add every way a client can misbehave.

use std::io::ErrorKind;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::Framing;
use crate::fuzz_entry::{ReadStep, Script, Setup, Then, WriteStep, check};

/// Bytes worth telling apart: newlines end lines, `\r` may make a `\r\n`
/// terminator; the rest are ordinary.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'a'),
        3 => Just(b'b'),
        3 => Just(b'\n'),
        1 => Just(b'\r'),
        1 => any::<u8>(),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::ConnectionReset),
        Just(ErrorKind::BrokenPipe),
        Just(ErrorKind::TimedOut),
        Just(ErrorKind::Other),
    ]
}

fn read_step() -> impl Strategy<Value = ReadStep> {
    prop_oneof![
        8 => vec(byte(), 1..6).prop_map(ReadStep::Read),
        // Now and then a client that sends a lot at once, so that a
        // lingering connection with tiny chunks runs out of calls.
        1 => vec(byte(), 1..200).prop_map(ReadStep::Read),
        3 => Just(ReadStep::WouldBlock),
        2 => Just(ReadStep::Interrupted),
        1 => Just(ReadStep::Eof),
        1 => error_kind().prop_map(ReadStep::Error),
    ]
}

fn write_step() -> impl Strategy<Value = WriteStep> {
    prop_oneof![
        6 => (1usize..8).prop_map(WriteStep::Write),
        // A write that takes nothing: never from a real socket, but the
        // connection must not spin on it.
        1 => Just(WriteStep::Write(0)),
        3 => Just(WriteStep::WouldBlock),
        2 => Just(WriteStep::Interrupted),
        1 => error_kind().prop_map(WriteStep::Error),
    ]
}

fn script(framing: Framing) -> impl Strategy<Value = Script> {
    let setup = (
        0usize..12,
        1usize..8,
        proptest::option::of(1usize..8),
        any::<bool>(),
    )
        .prop_map(move |(max_message, read_chunk, write_chunk, linger)| Setup {
            framing,
            max_message,
            read_chunk,
            write_chunk,
            linger,
        });
    (
        setup,
        vec(read_step(), 0..40),
        vec(write_step(), 0..40),
        proptest::option::weighted(0.1, error_kind()),
        prop_oneof![Just(Then::Eof), Just(Then::Deadline), Just(Then::CutOff)],
    )
        .prop_map(|(setup, reads, writes, shutdown_fails, then)| Script {
            setup,
            reads,
            writes,
            shutdown_fails,
            then,
        })
}

/// 1000 cases per framing, or `PROPTEST_CASES` for a longer run.
fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(1000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn burst_holds_every_invariant_under_any_script(script in script(Framing::Burst)) {
        check(&script);
    }

    #[test]
    fn line_holds_every_invariant_under_any_script(script in script(Framing::Line)) {
        check(&script);
    }

    #[test]
    fn eof_holds_every_invariant_under_any_script(script in script(Framing::Eof)) {
        check(&script);
    }
}
