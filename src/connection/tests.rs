//! Unit tests of the connection state machine, driven through a scripted
//! fake stream.
//!
//! A real socket decides for itself when a read is short, when a write
//! would block and when a reset arrives, so the interesting cases happen
//! only sometimes. [`ScriptedStream`] makes each of them happen at an exact
//! call: the tests script what every `read`, `write` and `shutdown_write`
//! returns, then check what the connection did: its state, the interest it
//! asks for, the bytes it wrote, when it shut down, and the counters.
//!
//! The tests are grouped per state (`receiving`, `sending`, `lingering`,
//! `closed`), then by concern (`framing`, `oversize`, `lingering_close`,
//! `deadlines`, `cut_off`, `chunks`, `turn_budget`, `abortive_close`,
//! `memory`, `turn_calls`, `transitions`). Time is an `Instant`
//! taken once per test plus explicit offsets: nothing sleeps.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::Interest;

use super::{
    CloseReason, Connection, Context, Event, Name, State, StateKind, TRANSITIONS, TURN_BUDGET, TURN_CALLS,
    Turn, scratch_len,
};
use crate::observer::{self, Observer};
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::Transport;
use crate::{Config, Framing};

// ---------------------------------------------------------------------------
// The scripted stream
// ---------------------------------------------------------------------------

/// What one `read` call returns.
#[derive(Debug)]
enum Read {
    /// These bytes have arrived. A caller's buffer smaller than them takes a
    /// prefix, and the rest stays for the next call, as in a kernel buffer.
    Data(Vec<u8>),
    /// `count` bytes of `byte`, handed out as fast as the caller asks: a
    /// client that sends without pause. Bounded, so a connection that never
    /// yields ends up failing an assertion instead of hanging the test.
    Flood {
        byte: u8,
        count: usize,
    },
    WouldBlock,
    Interrupted,
    /// The client shut down its write half: `Ok(0)`.
    Eof,
    Error(ErrorKind),
}

/// What one `write` call returns.
#[derive(Debug)]
enum Write {
    /// Takes at most this many bytes of what is offered (fewer than offered
    /// is a short write; `Accept(0)` is a write that took nothing).
    Accept(usize),
    WouldBlock,
    Interrupted,
    Error(ErrorKind),
}

/// One call the connection made, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// `asked` is the buffer's length; `got` the bytes delivered (0 at end
    /// of stream), `None` when the call returned an error.
    Read {
        asked: usize,
        got: Option<usize>,
    },
    /// `offered` is the slice's length; `took` the bytes accepted, `None`
    /// when the call returned an error.
    Write {
        offered: usize,
        took: Option<usize>,
    },
    ShutdownWrite,
}

/// A [`Transport`] whose every answer comes from a script. When the read
/// script runs out, reads would block (nothing more has arrived); when the
/// write script runs out, writes take everything (the send buffer has room).
#[derive(Debug, Default)]
struct ScriptedStream {
    reads: VecDeque<Read>,
    writes: VecDeque<Write>,
    shutdown_error: Option<ErrorKind>,
    /// Every byte a write took, in order.
    written: Vec<u8>,
    calls: Vec<Call>,
    /// How many bytes had been written when `shutdown_write` was called.
    shutdown_after: Option<usize>,
}

fn data(bytes: &[u8]) -> Read {
    Read::Data(bytes.to_vec())
}

fn error(kind: ErrorKind) -> io::Error {
    io::Error::new(kind, format!("scripted {kind:?}"))
}

impl ScriptedStream {
    fn new() -> Self {
        Self::default()
    }

    fn reading(mut self, steps: impl IntoIterator<Item = Read>) -> Self {
        self.push_reads(steps);
        self
    }

    fn writing(mut self, steps: impl IntoIterator<Item = Write>) -> Self {
        self.push_writes(steps);
        self
    }

    fn push_reads(&mut self, steps: impl IntoIterator<Item = Read>) {
        self.reads.extend(steps);
    }

    fn push_writes(&mut self, steps: impl IntoIterator<Item = Write>) {
        self.writes.extend(steps);
    }

    fn fail_shutdown(&mut self, kind: ErrorKind) {
        self.shutdown_error = Some(kind);
    }

    /// How many calls have been made so far: a mark for [`Self::calls_since`].
    fn mark(&self) -> usize {
        self.calls.len()
    }

    fn calls_since(&self, mark: usize) -> &[Call] {
        &self.calls[mark..]
    }

    /// The buffer length of every read call, in order.
    fn read_sizes(&self) -> Vec<usize> {
        self.calls
            .iter()
            .filter_map(|call| match call {
                Call::Read { asked, .. } => Some(*asked),
                _ => None,
            })
            .collect()
    }

    /// The slice length of every write call, in order.
    fn write_offers(&self) -> Vec<usize> {
        self.calls
            .iter()
            .filter_map(|call| match call {
                Call::Write { offered, .. } => Some(*offered),
                _ => None,
            })
            .collect()
    }

    fn shutdowns(&self) -> usize {
        self.calls
            .iter()
            .filter(|call| **call == Call::ShutdownWrite)
            .count()
    }

    /// Bytes delivered by reads made after `mark`.
    fn bytes_read_since(&self, mark: usize) -> usize {
        self.calls_since(mark)
            .iter()
            .map(|call| match call {
                Call::Read { got: Some(n), .. } => *n,
                _ => 0,
            })
            .sum()
    }
}

impl Transport for ScriptedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let asked = buf.len();
        let result = match self.reads.pop_front() {
            None | Some(Read::WouldBlock) => Err(error(ErrorKind::WouldBlock)),
            Some(Read::Interrupted) => Err(error(ErrorKind::Interrupted)),
            Some(Read::Eof) => Ok(0),
            Some(Read::Error(kind)) => Err(error(kind)),
            Some(Read::Data(mut bytes)) => {
                let n = bytes.len().min(asked);
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    bytes.drain(..n);
                    self.reads.push_front(Read::Data(bytes));
                }
                Ok(n)
            }
            Some(Read::Flood { byte, count }) => {
                let n = count.min(asked);
                buf[..n].fill(byte);
                if n < count {
                    self.reads.push_front(Read::Flood {
                        byte,
                        count: count - n,
                    });
                }
                Ok(n)
            }
        };
        self.calls.push(Call::Read {
            asked,
            got: result.as_ref().ok().copied(),
        });
        result
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let offered = buf.len();
        let result = match self.writes.pop_front() {
            None => Ok(offered),
            Some(Write::Accept(n)) => Ok(n.min(offered)),
            Some(Write::WouldBlock) => Err(error(ErrorKind::WouldBlock)),
            Some(Write::Interrupted) => Err(error(ErrorKind::Interrupted)),
            Some(Write::Error(kind)) => Err(error(kind)),
        };
        if let Ok(n) = result {
            self.written.extend_from_slice(&buf[..n]);
        }
        self.calls.push(Call::Write {
            offered,
            took: result.as_ref().ok().copied(),
        });
        result
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.calls.push(Call::ShutdownWrite);
        self.shutdown_after.get_or_insert(self.written.len());
        match self.shutdown_error {
            Some(kind) => Err(error(kind)),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration, context and fixtures
// ---------------------------------------------------------------------------

const IDLE: Duration = Duration::from_secs(10);
const READ: Duration = Duration::from_secs(30);
const LINGER: Duration = Duration::from_secs(2);
/// Small, so oversize is cheap to provoke.
const MAX_MESSAGE: usize = 32;
/// Smaller than most test messages, so they arrive over several reads.
const READ_CHUNK: usize = 8;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn config(framing: Framing) -> Config {
    Config {
        framing,
        max_message: MAX_MESSAGE,
        read_chunk: READ_CHUNK,
        write_chunk: None,
        idle_timeout: Some(IDLE),
        read_timeout: Some(READ),
        linger: LINGER,
        ..Config::default()
    }
}

fn reversed(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().rev().copied().collect()
}

/// A config, fresh counters, and the instant the connection was accepted.
/// Every input gets its `Context` from [`Harness::at`], an offset from
/// `start`.
struct Harness {
    config: Config,
    stats: Stats,
    start: Instant,
    /// Every event the connections report, in order.
    observed: Recorder,
}

/// An observer that keeps every event.
#[derive(Default)]
struct Recorder(RefCell<Vec<observer::Event>>);

impl Observer for Recorder {
    fn on_event(&self, event: &observer::Event) {
        self.0.borrow_mut().push(event.clone());
    }
}

impl Harness {
    fn new(framing: Framing) -> Self {
        Self::with(config(framing))
    }

    fn with(config: Config) -> Self {
        Harness {
            config,
            stats: Stats::default(),
            start: Instant::now(),
            observed: Recorder::default(),
        }
    }

    /// The context of a timer or a cut-off `offset` after `start`: those
    /// inputs read nothing, so the scratch buffer is empty.
    fn at(&self, offset: Duration) -> Context<'_> {
        Context {
            config: &self.config,
            stats: &self.stats,
            now: self.start + offset,
            scratch: &mut [],
            observer: Some(&self.observed),
            admission: None,
        }
    }

    /// A readiness event `offset` after `start`, with a fresh scratch buffer
    /// of the size the server would allocate.
    fn ready(&self, conn: &mut Connection, stream: &mut impl Transport, offset: Duration) -> Turn {
        let mut scratch = vec![0; scratch_len(&self.config)];
        let mut cx = Context {
            config: &self.config,
            stats: &self.stats,
            now: self.start + offset,
            scratch: &mut scratch,
            observer: Some(&self.observed),
            admission: None,
        };
        conn.on_ready(stream, &mut cx)
    }

    /// A connection accepted at `start`.
    fn connection(&self) -> Connection {
        Connection::new(
            Name {
                id: 1,
                peer: None,
                via: None,
            },
            self.start,
        )
    }

    /// The events reported since the last call, taken.
    fn events(&self) -> Vec<observer::Event> {
        std::mem::take(&mut *self.observed.0.borrow_mut())
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn deadline(&self, conn: &Connection) -> Option<Instant> {
        conn.deadline(&self.config)
    }
}

#[track_caller]
fn assert_receiving(conn: &Connection) {
    assert_live(conn, "Receiving", Interest::READABLE);
}

#[track_caller]
fn assert_sending(conn: &Connection) {
    assert_live(conn, "Sending", Interest::WRITABLE);
}

#[track_caller]
fn assert_lingering(conn: &Connection) {
    assert_live(conn, "Lingering", Interest::READABLE);
}

/// A live state is named `state`, asks for `interest`, and has no close reason.
#[track_caller]
fn assert_live(conn: &Connection, state: &str, interest: Interest) {
    assert_eq!(conn.state().to_string(), state);
    assert_eq!(conn.interest(), Some(interest));
    assert_eq!(conn.close_reason(), None);
}

#[track_caller]
fn assert_closed(conn: &Connection, reason: CloseReason) {
    assert!(
        matches!(conn.state(), State::Closed { reason: r, .. } if *r == reason),
        "expected Closed({reason}), got {}",
        conn.state()
    );
    assert_eq!(conn.close_reason(), Some(reason));
    assert_eq!(conn.interest(), None);
    assert_eq!(conn.deadline(&Config::default()), None);
}

/// The reply went out whole, and only then the write half was shut down,
/// exactly once, with no write after it.
#[track_caller]
fn assert_reply_then_shutdown(stream: &ScriptedStream, reply: &[u8]) {
    assert_eq!(stream.written, reply, "reply bytes");
    assert_eq!(stream.shutdowns(), 1, "shutdown_write calls");
    assert_eq!(
        stream.shutdown_after,
        Some(reply.len()),
        "bytes written before shutdown"
    );
    let shutdown_at = stream
        .calls
        .iter()
        .position(|call| *call == Call::ShutdownWrite)
        .expect("a shutdown call");
    assert!(
        !stream.calls[shutdown_at..]
            .iter()
            .any(|call| matches!(call, Call::Write { .. })),
        "a write after shutdown: {:?}",
        stream.calls
    );
}

#[track_caller]
fn assert_no_reply_no_shutdown(stream: &ScriptedStream) {
    assert!(stream.written.is_empty(), "wrote {:?}", stream.written);
    assert_eq!(stream.shutdowns(), 0);
}

#[track_caller]
fn sending_progress(conn: &Connection) -> (usize, usize) {
    match conn.state() {
        State::Sending { reply, written, .. } => (*written, reply.len()),
        other => panic!("expected Sending, got {other}"),
    }
}

#[track_caller]
fn discarded(conn: &Connection) -> u64 {
    match conn.state() {
        State::Lingering { discarded, .. } => *discarded,
        other => panic!("expected Lingering, got {other}"),
    }
}

/// A connection in `Receiving` that has buffered `partial` (with no
/// complete message in it) and is waiting for more. In burst framing only
/// an empty `partial` stays in `Receiving`.
fn conn_receiving(h: &Harness, partial: &[u8]) -> (Connection, ScriptedStream) {
    let mut conn = h.connection();
    let mut stream = ScriptedStream::new();
    if !partial.is_empty() {
        stream.push_reads([data(partial), Read::WouldBlock]);
    }
    assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);
    assert_receiving(&conn);
    (conn, stream)
}

/// A burst-framing connection, at `start`, whose `reply` is waiting to be
/// written: its message arrived, and the first write would block.
fn conn_sending(h: &Harness, reply: &[u8]) -> (Connection, ScriptedStream) {
    assert_eq!(
        h.config.framing,
        Framing::Burst,
        "conn_sending uses burst framing"
    );
    assert!(!reply.is_empty(), "burst framing needs a non-empty message");
    let mut conn = h.connection();
    let mut stream = ScriptedStream::new()
        .reading([Read::Data(reversed(reply)), Read::WouldBlock])
        .writing([Write::WouldBlock]);
    assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);
    assert_sending(&conn);
    assert_eq!(sending_progress(&conn), (0, reply.len()));
    assert!(stream.written.is_empty());
    (conn, stream)
}

/// A burst-framing connection that replied `cba` to `abc` at `start`, shut
/// down its write half, and is lingering until `start + LINGER`.
fn conn_lingering(h: &Harness) -> (Connection, ScriptedStream) {
    assert_eq!(
        h.config.framing,
        Framing::Burst,
        "conn_lingering uses burst framing"
    );
    let mut conn = h.connection();
    let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::WouldBlock]);
    assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);
    assert_lingering(&conn);
    assert_reply_then_shutdown(&stream, b"cba");
    (conn, stream)
}

/// A connection that refused an oversize message at `start`: nothing
/// written, write half shut down, lingering until `start + LINGER`.
fn conn_lingering_after_oversize(h: &Harness) -> (Connection, ScriptedStream) {
    let mut conn = h.connection();
    let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; h.config.max_message + 1])]);
    assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);
    assert_lingering(&conn);
    assert_reply_then_shutdown(&stream, b"");
    (conn, stream)
}

/// What a read or write error closes a connection with.
const RESETS: [ErrorKind; 2] = [ErrorKind::ConnectionReset, ErrorKind::BrokenPipe];
const OTHER_ERRORS: [ErrorKind; 3] = [ErrorKind::PermissionDenied, ErrorKind::TimedOut, ErrorKind::Other];

// ---------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------

mod receiving {
    use super::*;

    #[test]
    fn a_new_connection_waits_for_the_client_to_speak() {
        let h = Harness::new(Framing::Burst);
        let conn = h.connection();
        assert_receiving(&conn);
        // Idle (10s) comes before read (30s), both counted from accept.
        assert_eq!(h.deadline(&conn), Some(h.start + IDLE));
    }

    #[test]
    fn the_seed_message_gets_its_reversal_then_end_of_stream() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"Hello, world!"), Read::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(5)), Turn::Wait);

        assert_reply_then_shutdown(&stream, b"!dlrow ,olleH");
        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + ms(5) + LINGER));
        assert_eq!(
            h.stats(),
            StatsSnapshot {
                bytes_in: 13,
                bytes_out: 13,
                replies_completed: 1,
                ..StatsSnapshot::default()
            }
        );
    }

    #[test]
    fn a_spurious_readable_event_with_nothing_buffered_keeps_waiting() {
        for framing in [Framing::Burst, Framing::Line, Framing::Eof] {
            let h = Harness::new(framing);
            let mut conn = h.connection();
            let mut stream = ScriptedStream::new().reading([Read::WouldBlock]);

            assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);

            assert_receiving(&conn);
            assert_no_reply_no_shutdown(&stream);
            assert_eq!(stream.calls.len(), 1, "{framing}: one read, then wait");
            assert_eq!(h.stats(), StatsSnapshot::default());
            // No byte moved, so the idle deadline has not moved either.
            assert_eq!(h.deadline(&conn), Some(h.start + IDLE));
        }
    }

    #[test]
    fn short_reads_are_joined_into_one_message() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"Hel"), data(b"lo"), Read::WouldBlock]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"olleH");
        assert_lingering(&conn);
    }

    #[test]
    fn an_interrupted_read_is_retried_without_losing_bytes() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([
            Read::Interrupted,
            data(b"ab"),
            Read::Interrupted,
            data(b"cd"),
            Read::WouldBlock,
        ]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"dcba");
        assert_lingering(&conn);
        assert_eq!(h.stats().bytes_in, 4);
    }

    #[test]
    fn an_interrupted_read_with_nothing_else_keeps_waiting() {
        let h = Harness::new(Framing::Line);
        let (mut conn, mut stream) = conn_receiving(&h, b"ab");
        stream.push_reads([Read::Interrupted, Read::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);

        assert_receiving(&conn);
        assert_no_reply_no_shutdown(&stream);
    }

    #[test]
    fn a_reset_while_receiving_closes_as_reset_without_a_reply() {
        for kind in RESETS {
            let h = Harness::new(Framing::Line);
            let (mut conn, mut stream) = conn_receiving(&h, b"partial");
            stream.push_reads([Read::Error(kind)]);

            assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);

            assert_closed(&conn, CloseReason::Reset);
            assert_no_reply_no_shutdown(&stream);
            assert_eq!(h.stats().replies_completed, 0, "{kind:?}");
        }
    }

    #[test]
    fn another_read_error_while_receiving_closes_as_io_error() {
        for kind in OTHER_ERRORS {
            let h = Harness::new(Framing::Burst);
            let mut conn = h.connection();
            let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::Error(kind)]);

            h.ready(&mut conn, &mut stream, Duration::ZERO);

            assert_closed(&conn, CloseReason::IoError);
            assert_no_reply_no_shutdown(&stream);
        }
    }

    #[test]
    fn end_of_stream_after_a_message_replies_and_closes_without_lingering() {
        // The client has finished sending: nothing can arrive after the
        // reply to provoke a reset, so there is nothing to linger for.
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::Eof]);

        assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);

        assert_reply_then_shutdown(&stream, b"cba");
        assert_closed(&conn, CloseReason::Completed);
        assert_eq!(
            stream.calls.last(),
            Some(&Call::ShutdownWrite),
            "no read after end of stream"
        );
        assert_eq!(h.stats().replies_completed, 1);
    }

    #[test]
    fn an_empty_message_then_end_of_stream_gets_an_empty_reply_in_every_framing() {
        for framing in [Framing::Burst, Framing::Line, Framing::Eof] {
            let h = Harness::new(framing);
            let mut conn = h.connection();
            let mut stream = ScriptedStream::new().reading([Read::Eof]);

            assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);

            assert_reply_then_shutdown(&stream, b"");
            assert_closed(&conn, CloseReason::Completed);
            assert_eq!(
                stream.calls,
                [
                    Call::Read {
                        asked: READ_CHUNK,
                        got: Some(0)
                    },
                    Call::ShutdownWrite
                ],
                "{framing}: no write of nothing, no lingering read"
            );
            assert_eq!(
                h.stats(),
                StatsSnapshot {
                    replies_completed: 1,
                    ..StatsSnapshot::default()
                },
                "{framing}"
            );
        }
    }

    #[test]
    fn all_256_byte_values_are_reversed_exactly() {
        let message: Vec<u8> = (0..=255).collect();
        let h = Harness::with(Config {
            max_message: 256,
            read_chunk: 100,
            ..config(Framing::Eof)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(message.clone()), Read::Eof]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, &reversed(&message));
        assert_closed(&conn, CloseReason::Completed);
    }
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

mod framing {
    use super::*;

    #[test]
    fn burst_ends_the_message_at_would_block_even_across_reads() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        // Longer than READ_CHUNK: two reads, still one burst.
        let mut stream = ScriptedStream::new().reading([data(b"0123456789ab"), Read::WouldBlock]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"ba9876543210");
        assert_eq!(stream.read_sizes()[..2], [READ_CHUNK, READ_CHUNK]);
    }

    #[test]
    fn line_keeps_a_newline_terminator_at_the_end() {
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc\n")]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"cba\n");
        assert_lingering(&conn);
    }

    #[test]
    fn line_keeps_a_crlf_terminator_at_the_end() {
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc\r\n")]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"cba\r\n");
    }

    #[test]
    fn line_waits_across_would_block_until_the_newline_arrives() {
        let h = Harness::new(Framing::Line);
        let (mut conn, mut stream) = conn_receiving(&h, b"Hello, ");
        stream.push_reads([data(b"world"), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, ms(1));
        assert_receiving(&conn);
        assert_no_reply_no_shutdown(&stream);

        stream.push_reads([data(b"!\n")]);
        h.ready(&mut conn, &mut stream, ms(2));

        assert_reply_then_shutdown(&stream, b"!dlrow ,olleH\n");
        assert_lingering(&conn);
    }

    #[test]
    fn line_bytes_after_the_first_line_are_not_part_of_the_message() {
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"ab\ncd\nef")]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"ba\n");
        assert_lingering(&conn);
        // Read together with the line, then thrown away; still counted in.
        let stats = h.stats();
        assert_eq!(stats.bytes_in, 8);
        assert_eq!(stats.bytes_discarded, 5);
    }

    #[test]
    fn line_half_closed_before_a_newline_replies_without_a_terminator() {
        let h = Harness::new(Framing::Line);
        let (mut conn, mut stream) = conn_receiving(&h, b"abc");
        stream.push_reads([Read::Eof]);

        h.ready(&mut conn, &mut stream, ms(1));

        assert_reply_then_shutdown(&stream, b"cba");
        assert_closed(&conn, CloseReason::Completed);
    }

    #[test]
    fn eof_framing_keeps_waiting_through_would_block_and_newlines() {
        let h = Harness::new(Framing::Eof);
        let (mut conn, mut stream) = conn_receiving(&h, b"ab\n");
        stream.push_reads([data(b"cd\n"), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, ms(1));
        assert_receiving(&conn);
        assert_no_reply_no_shutdown(&stream);

        stream.push_reads([data(b"ef"), Read::Eof]);
        h.ready(&mut conn, &mut stream, ms(2));

        assert_reply_then_shutdown(&stream, b"fe\ndc\nba");
        assert_closed(&conn, CloseReason::Completed);
    }
}

// ---------------------------------------------------------------------------
// Oversize
// ---------------------------------------------------------------------------

mod oversize {
    use super::*;

    #[test]
    fn the_largest_max_message_is_not_an_overflow() {
        // `--max-message 15EiB` parses to nearly usize::MAX; reading "one byte
        // past the limit" must not wrap to a zero-length read, which would
        // look like end of stream.
        let h = Harness::with(Config {
            max_message: usize::MAX,
            ..config(Framing::Eof)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::Eof]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"cba");
        assert_closed(&conn, CloseReason::Completed);
    }

    #[test]
    fn oversize_in_every_framing_gets_no_reply_a_shutdown_then_lingering() {
        for framing in [Framing::Burst, Framing::Line, Framing::Eof] {
            let h = Harness::new(framing);
            let mut conn = h.connection();
            let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; 100])]);

            assert_eq!(h.ready(&mut conn, &mut stream, ms(3)), Turn::Wait);

            assert_lingering(&conn);
            assert_reply_then_shutdown(&stream, b"");
            assert_eq!(h.deadline(&conn), Some(h.start + ms(3) + LINGER), "{framing}");
            let stats = h.stats();
            assert_eq!(stats.replies_completed, 0, "{framing}");
            assert_eq!(stats.bytes_out, 0, "{framing}");
            // The rest of the 100 bytes is read and thrown away while lingering.
            assert_eq!(stats.bytes_in, 100, "{framing}");
            assert_eq!(stats.bytes_discarded, 100 - (MAX_MESSAGE as u64 + 1), "{framing}");

            stream.push_reads([Read::Eof]);
            h.ready(&mut conn, &mut stream, ms(4));
            assert_closed(&conn, CloseReason::Oversize);
        }
    }

    #[test]
    fn oversize_is_never_buffered_past_one_byte_over_the_limit() {
        for framing in [Framing::Burst, Framing::Line, Framing::Eof] {
            let h = Harness::new(framing);
            let mut conn = h.connection();
            let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; 100])]);

            h.ready(&mut conn, &mut stream, Duration::ZERO);

            // Receiving reads up to the shutdown; what follows is discarding.
            let shutdown_at = stream.calls.iter().position(|c| *c == Call::ShutdownWrite);
            let receiving_reads: usize = stream.calls[..shutdown_at.expect("shutdown")]
                .iter()
                .map(|call| match call {
                    Call::Read { asked, .. } => *asked,
                    _ => 0,
                })
                .sum();
            assert_eq!(receiving_reads, MAX_MESSAGE + 1, "{framing}");
        }
    }

    #[test]
    fn exactly_max_message_bytes_is_still_a_message() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let message: Vec<u8> = (0..MAX_MESSAGE as u8).collect();
        let mut stream = ScriptedStream::new().reading([Read::Data(message.clone()), Read::WouldBlock]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, &reversed(&message));
        assert_lingering(&conn);
    }

    #[test]
    fn the_line_terminator_counts_towards_max_message() {
        let fits = {
            let mut line = vec![b'a'; MAX_MESSAGE - 2];
            line.extend_from_slice(b"\r\n");
            line
        };
        let too_long = {
            let mut line = vec![b'a'; MAX_MESSAGE];
            line.push(b'\n');
            line
        };
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(fits.clone())]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert_eq!(
            stream.written.len(),
            MAX_MESSAGE,
            "a line of exactly max_message with its CRLF"
        );
        assert_lingering(&conn);

        // Content exactly max_message, plus the terminator: one byte over.
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(too_long), Read::Eof]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert_reply_then_shutdown(&stream, b"");
        assert_closed(&conn, CloseReason::Oversize);
        assert_eq!(h.stats().replies_completed, 0);
    }

    #[test]
    fn a_refused_client_closes_as_oversize_at_the_linger_deadline() {
        let h = Harness::new(Framing::Eof);
        let (mut conn, _stream) = conn_lingering_after_oversize(&h);

        assert!(!conn.on_deadline(&h.at(LINGER - ms(1))));
        assert_lingering(&conn);
        assert!(conn.on_deadline(&h.at(LINGER)));
        assert_closed(&conn, CloseReason::Oversize);
    }

    #[test]
    fn a_refused_client_that_resets_while_lingering_still_counts_as_oversize() {
        let h = Harness::new(Framing::Line);
        let (mut conn, mut stream) = conn_lingering_after_oversize(&h);
        stream.push_reads([Read::Error(ErrorKind::ConnectionReset)]);

        h.ready(&mut conn, &mut stream, ms(1));

        assert_closed(&conn, CloseReason::Oversize);
    }

    #[test]
    fn a_refused_client_whose_shutdown_fails_still_counts_as_oversize() {
        // The client overran the limit and reset before our shutdown. When the
        // reset is seen one call later (while lingering), the connection still
        // counts as refused (see the test above); it must not depend on which
        // call happened to see the reset first.
        let h = Harness::new(Framing::Eof);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; 100])]);
        stream.fail_shutdown(ErrorKind::NotConnected);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert!(stream.written.is_empty());
        assert_closed(&conn, CloseReason::Oversize);
    }

    #[test]
    fn a_refusal_with_linger_off_closes_right_after_the_shutdown() {
        let h = Harness::with(Config {
            linger: Duration::ZERO,
            ..config(Framing::Burst)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; 100])]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"");
        assert_closed(&conn, CloseReason::Oversize);
        assert_eq!(stream.calls.last(), Some(&Call::ShutdownWrite));
    }
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

mod sending {
    use super::*;

    #[test]
    fn a_reply_that_would_block_waits_for_writable() {
        let h = Harness::new(Framing::Burst);
        let (conn, stream) = conn_sending(&h, b"abc");

        assert_sending(&conn);
        assert_no_reply_no_shutdown(&stream);
        // The last progress was the read at `start`.
        assert_eq!(h.deadline(&conn), Some(h.start + IDLE));
        assert_eq!(h.stats().partial_writes, 0);
    }

    #[test]
    fn a_writable_event_writes_the_whole_reply_then_shuts_down_and_lingers() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abc");

        assert_eq!(h.ready(&mut conn, &mut stream, ms(10)), Turn::Wait);

        assert_reply_then_shutdown(&stream, b"abc");
        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + ms(10) + LINGER));
        assert_eq!(
            h.stats(),
            StatsSnapshot {
                bytes_in: 3,
                bytes_out: 3,
                replies_completed: 1,
                ..StatsSnapshot::default()
            }
        );
    }

    #[test]
    fn a_spurious_writable_event_that_would_block_keeps_sending() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abc");
        stream.push_writes([Write::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(10)), Turn::Wait);

        assert_sending(&conn);
        assert_eq!(sending_progress(&conn), (0, 3));
        assert_no_reply_no_shutdown(&stream);
        // Nothing moved: the idle deadline stays where it was.
        assert_eq!(h.deadline(&conn), Some(h.start + IDLE));
    }

    #[test]
    fn a_short_write_is_resumed_on_the_next_writable_event() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abcdef");
        stream.push_writes([Write::Accept(2), Write::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(10)), Turn::Wait);
        assert_sending(&conn);
        assert_eq!(sending_progress(&conn), (2, 6));
        assert_eq!(stream.written, b"ab");
        assert_eq!(
            stream.shutdowns(),
            0,
            "no shutdown before the whole reply is written"
        );
        assert_eq!(h.stats().partial_writes, 1);
        assert_eq!(h.stats().bytes_out, 2);

        // The rest, and only the rest, is offered next time.
        let mark = stream.mark();
        assert_eq!(h.ready(&mut conn, &mut stream, ms(20)), Turn::Wait);
        assert_eq!(
            stream.calls_since(mark)[0],
            Call::Write {
                offered: 4,
                took: Some(4)
            }
        );
        assert_reply_then_shutdown(&stream, b"abcdef");
        assert_lingering(&conn);
        let stats = h.stats();
        assert_eq!(stats.partial_writes, 1);
        assert_eq!(stats.bytes_out, 6);
        assert_eq!(stats.replies_completed, 1);
    }

    #[test]
    fn several_short_writes_in_one_turn_each_count_as_partial() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abcdef");
        stream.push_writes([Write::Accept(1), Write::Accept(2)]);

        h.ready(&mut conn, &mut stream, ms(10));

        assert_eq!(
            stream.write_offers(),
            [6, 6, 5, 3],
            "the fixture's WouldBlock write, then the rest each time"
        );
        assert_reply_then_shutdown(&stream, b"abcdef");
        assert_lingering(&conn);
        assert_eq!(h.stats().partial_writes, 2);
    }

    #[test]
    fn an_interrupted_write_is_retried() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abc");
        stream.push_writes([Write::Interrupted, Write::Interrupted]);

        h.ready(&mut conn, &mut stream, ms(10));

        assert_reply_then_shutdown(&stream, b"abc");
        assert_lingering(&conn);
        assert_eq!(h.stats().partial_writes, 0);
    }

    #[test]
    fn a_reset_while_sending_closes_as_reset_without_a_shutdown() {
        for kind in RESETS {
            let h = Harness::new(Framing::Burst);
            let (mut conn, mut stream) = conn_sending(&h, b"abcdef");
            stream.push_writes([Write::Accept(2), Write::Error(kind)]);

            h.ready(&mut conn, &mut stream, ms(10));

            assert_closed(&conn, CloseReason::Reset);
            assert_eq!(stream.written, b"ab", "{kind:?}");
            assert_eq!(stream.shutdowns(), 0, "{kind:?}");
            assert_eq!(h.stats().replies_completed, 0, "{kind:?}");
        }
    }

    #[test]
    fn another_write_error_closes_as_io_error() {
        for kind in OTHER_ERRORS {
            let h = Harness::new(Framing::Burst);
            let (mut conn, mut stream) = conn_sending(&h, b"abc");
            stream.push_writes([Write::Error(kind)]);

            h.ready(&mut conn, &mut stream, ms(10));

            assert_closed(&conn, CloseReason::IoError);
            assert_no_reply_no_shutdown(&stream);
        }
    }

    #[test]
    fn a_write_that_takes_nothing_is_an_error_not_a_busy_loop() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abc");
        stream.push_writes([Write::Accept(0)]);

        h.ready(&mut conn, &mut stream, ms(10));

        assert_closed(&conn, CloseReason::IoError);
        assert_no_reply_no_shutdown(&stream);
    }

    #[test]
    fn a_failed_shutdown_after_the_reply_closes_the_connection() {
        for (kind, reason) in [
            (ErrorKind::NotConnected, CloseReason::Reset),
            (ErrorKind::Other, CloseReason::IoError),
        ] {
            let h = Harness::new(Framing::Burst);
            let (mut conn, mut stream) = conn_sending(&h, b"abc");
            stream.fail_shutdown(kind);

            h.ready(&mut conn, &mut stream, ms(10));

            assert_reply_then_shutdown(&stream, b"abc");
            assert_closed(&conn, reason);
            assert_eq!(
                stream.calls.last(),
                Some(&Call::ShutdownWrite),
                "no lingering read"
            );
        }
    }

    #[test]
    fn when_the_client_already_finished_a_resumed_reply_closes_without_lingering() {
        let h = Harness::new(Framing::Eof);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new()
            .reading([data(b"abcd"), Read::Eof])
            .writing([Write::Accept(1), Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert_sending(&conn);
        assert_eq!(stream.written, b"d");
        assert_eq!(stream.shutdowns(), 0);

        let mark = stream.mark();
        h.ready(&mut conn, &mut stream, ms(10));

        assert_reply_then_shutdown(&stream, b"dcba");
        assert_closed(&conn, CloseReason::Completed);
        assert!(
            !stream
                .calls_since(mark)
                .iter()
                .any(|c| matches!(c, Call::Read { .. })),
            "no read after the client's end of stream: {:?}",
            stream.calls_since(mark)
        );
    }

    #[test]
    fn sending_never_reads() {
        // While the reply is pending the connection waits for WRITABLE only;
        // what the client sends meanwhile is left for lingering.
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_sending(&h, b"abc");
        stream.push_writes([Write::WouldBlock]);
        stream.push_reads([data(b"more")]);
        let mark = stream.mark();

        h.ready(&mut conn, &mut stream, ms(10));

        assert_eq!(
            stream.calls_since(mark),
            [Call::Write {
                offered: 3,
                took: None
            }]
        );
        assert_sending(&conn);
    }
}

// ---------------------------------------------------------------------------
// Lingering
// ---------------------------------------------------------------------------

mod lingering {
    use super::*;

    #[test]
    fn lingering_waits_readable_until_the_linger_deadline() {
        let h = Harness::new(Framing::Burst);
        let (conn, _stream) = conn_lingering(&h);

        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + LINGER));
        assert_eq!(discarded(&conn), 0);
    }

    #[test]
    fn would_block_while_lingering_keeps_waiting() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_lingering(&h);
        stream.push_reads([Read::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(100)), Turn::Wait);

        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + LINGER));
    }

    #[test]
    fn data_while_lingering_is_discarded_and_does_not_move_the_deadline() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_lingering(&h);
        stream.push_reads([
            data(b"late"),
            Read::Interrupted,
            data(b"r bytes"),
            Read::WouldBlock,
        ]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(1500)), Turn::Wait);

        assert_lingering(&conn);
        assert_eq!(discarded(&conn), 11);
        assert_eq!(
            h.deadline(&conn),
            Some(h.start + LINGER),
            "absolute: discarding is not progress"
        );
        assert_eq!(stream.written, b"cba", "nothing more written");
        let stats = h.stats();
        assert_eq!(stats.bytes_discarded, 11);
        assert_eq!(stats.bytes_in, 3 + 11);
        assert_eq!(stats.bytes_out, 3);
    }

    #[test]
    fn client_end_of_stream_while_lingering_completes() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_lingering(&h);
        stream.push_reads([data(b"xyz"), Read::Eof]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(100)), Turn::Wait);

        assert_closed(&conn, CloseReason::Completed);
        assert_eq!(
            stream.calls.last(),
            Some(&Call::Read {
                asked: READ_CHUNK,
                got: Some(0)
            })
        );
        assert_eq!(h.stats().replies_completed, 1);
    }

    #[test]
    fn a_reset_while_lingering_closes_as_reset() {
        for kind in RESETS {
            let h = Harness::new(Framing::Burst);
            let (mut conn, mut stream) = conn_lingering(&h);
            stream.push_reads([Read::Error(kind)]);

            h.ready(&mut conn, &mut stream, ms(100));

            assert_closed(&conn, CloseReason::Reset);
            assert_reply_then_shutdown(&stream, b"cba");
        }
    }

    #[test]
    fn another_read_error_while_lingering_closes_as_io_error() {
        for kind in OTHER_ERRORS {
            let h = Harness::new(Framing::Burst);
            let (mut conn, mut stream) = conn_lingering(&h);
            stream.push_reads([Read::Error(kind)]);

            h.ready(&mut conn, &mut stream, ms(100));

            assert_closed(&conn, CloseReason::IoError);
        }
    }

    #[test]
    fn the_linger_deadline_closes_as_linger_timeout_not_before() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, _stream) = conn_lingering(&h);

        assert!(!conn.on_deadline(&h.at(LINGER - ms(1))));
        assert_lingering(&conn);

        assert!(conn.on_deadline(&h.at(LINGER)));
        assert_closed(&conn, CloseReason::LingerTimeout);
    }

    #[test]
    fn a_late_timer_still_closes_a_lingering_connection() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, _stream) = conn_lingering(&h);

        assert!(conn.on_deadline(&h.at(LINGER + secs(60))));

        assert_closed(&conn, CloseReason::LingerTimeout);
    }

    #[test]
    fn linger_off_closes_right_after_the_shutdown() {
        let h = Harness::with(Config {
            linger: Duration::ZERO,
            ..config(Framing::Burst)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::WouldBlock, data(b"more")]);

        assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);

        assert_reply_then_shutdown(&stream, b"cba");
        assert_closed(&conn, CloseReason::Completed);
        assert_eq!(
            stream.calls.last(),
            Some(&Call::ShutdownWrite),
            "nothing read after the shutdown"
        );
    }
}

// ---------------------------------------------------------------------------
// The lingering close, step by step
// ---------------------------------------------------------------------------

mod lingering_close {
    use super::*;

    /// The deterministic twin of the real-socket test: a client sends a
    /// line and lots more in one go, and only then reads. The reply must be
    /// written whole, then our FIN, and only then is the rest read and
    /// thrown away, so the close never turns into a reset.
    #[test]
    fn reply_survives_client_sending_more_after_message() {
        let h = Harness::with(Config {
            max_message: 1024,
            read_chunk: 64,
            ..config(Framing::Line)
        });
        let line = b"Hello, world!\n";
        // Past a few reads, within one turn's budget of calls.
        let extra = vec![b'x'; 2_000];
        let mut first_burst = line.to_vec();
        first_burst.extend_from_slice(&extra);
        let reply = b"!dlrow ,olleH\n";
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new()
            .reading([Read::Data(first_burst), Read::WouldBlock])
            .writing([Write::Accept(5), Write::WouldBlock]);

        // Turn 1: the line is read; the reply starts and the socket fills.
        assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);
        assert_sending(&conn);
        assert_eq!(stream.written, b"!dlro");
        assert_eq!(stream.shutdowns(), 0);
        assert_eq!(stream.read_sizes(), [64], "one read held the whole line");

        // Turn 2: writable. The rest of the reply, then shutdown(Write), then
        // the client's extra data is drained and discarded.
        let mark = stream.mark();
        assert_eq!(h.ready(&mut conn, &mut stream, ms(100)), Turn::Wait);
        assert_lingering(&conn);
        assert_reply_then_shutdown(&stream, reply);
        let since = stream.calls_since(mark);
        let shutdown_at = since
            .iter()
            .position(|c| *c == Call::ShutdownWrite)
            .expect("shutdown");
        assert!(
            since[..shutdown_at]
                .iter()
                .all(|c| matches!(c, Call::Write { .. }))
        );
        assert!(
            since[shutdown_at + 1..]
                .iter()
                .all(|c| matches!(c, Call::Read { .. }))
        );
        let linger_until = h.start + ms(100) + LINGER;
        assert_eq!(h.deadline(&conn), Some(linger_until));
        // What came with the line's read (64 - 14) plus what was drained.
        assert_eq!(h.stats().bytes_discarded, extra.len() as u64);

        // Turn 3, later: more arrives and is discarded; the deadline stays.
        stream.push_reads([Read::Data(vec![b'y'; 2000]), Read::WouldBlock]);
        assert_eq!(h.ready(&mut conn, &mut stream, ms(1900)), Turn::Wait);
        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(linger_until));
        assert!(!conn.on_deadline(&h.at(ms(1900))));

        // Turn 4: the client has read the reply and closes.
        stream.push_reads([Read::Eof]);
        assert_eq!(h.ready(&mut conn, &mut stream, ms(2000)), Turn::Wait);
        assert_closed(&conn, CloseReason::Completed);
        assert_eq!(stream.written, reply, "nothing written after the reply");
        assert_eq!(
            h.stats(),
            StatsSnapshot {
                bytes_in: (line.len() + extra.len() + 2000) as u64,
                bytes_out: reply.len() as u64,
                partial_writes: 1,
                bytes_discarded: (extra.len() + 2000) as u64,
                replies_completed: 1,
                ..StatsSnapshot::default()
            }
        );
    }

    #[test]
    fn a_client_that_never_closes_is_dropped_at_the_linger_deadline() {
        let h = Harness::new(Framing::Line);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"hi\nand more"), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert_reply_then_shutdown(&stream, b"ih\n");
        assert_lingering(&conn);

        // Bytes trickle in just before the deadline: it does not move.
        stream.push_reads([data(b"."), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, LINGER - ms(1));
        assert_eq!(h.deadline(&conn), Some(h.start + LINGER));

        assert!(conn.on_deadline(&h.at(LINGER)));
        assert_closed(&conn, CloseReason::LingerTimeout);
        assert_eq!(h.stats().replies_completed, 1);
    }
}

// ---------------------------------------------------------------------------
// Closed
// ---------------------------------------------------------------------------

mod closed {
    use super::*;

    fn conn_closed(h: &Harness) -> (Connection, ScriptedStream) {
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Error(ErrorKind::ConnectionReset)]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert_closed(&conn, CloseReason::Reset);
        (conn, stream)
    }

    #[test]
    fn a_stale_event_for_a_closed_connection_touches_nothing() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_closed(&h);
        stream.push_reads([data(b"abc")]);
        let mark = stream.mark();

        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);

        assert!(
            stream.calls_since(mark).is_empty(),
            "{:?}",
            stream.calls_since(mark)
        );
        assert_closed(&conn, CloseReason::Reset);
    }

    #[test]
    fn a_timer_for_a_closed_connection_does_nothing() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, _stream) = conn_closed(&h);

        assert!(!conn.on_deadline(&h.at(secs(3600))));

        assert_closed(&conn, CloseReason::Reset);
    }

    #[test]
    fn cut_off_keeps_the_reason_a_closed_connection_already_has() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, _stream) = conn_closed(&h);

        conn.cut_off(&h.at(ms(1)));

        assert_closed(&conn, CloseReason::Reset);
    }
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

mod deadlines {
    use super::*;

    #[test]
    fn idle_timeout_counts_from_the_last_byte_moved() {
        let h = Harness::new(Framing::Eof);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new();

        stream.push_reads([data(b"ab"), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(4));
        assert_eq!(h.deadline(&conn), Some(h.start + secs(4) + IDLE));

        // An event that moves no byte is not progress.
        stream.push_reads([Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(6));
        assert_eq!(h.deadline(&conn), Some(h.start + secs(4) + IDLE));

        assert!(!conn.on_deadline(&h.at(secs(4) + IDLE - ms(1))));
        assert_receiving(&conn);
        assert!(conn.on_deadline(&h.at(secs(4) + IDLE)));
        assert_closed(&conn, CloseReason::IdleTimeout);
    }

    #[test]
    fn read_timeout_counts_from_accept_even_when_bytes_trickle_in() {
        let h = Harness::new(Framing::Eof);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new();
        // A byte just before each idle timeout would keep the idle deadline
        // moving forever.
        for at in [9, 18, 27] {
            stream.push_reads([data(b"."), Read::WouldBlock]);
            h.ready(&mut conn, &mut stream, secs(at));
            assert!(!conn.on_deadline(&h.at(secs(at))));
        }
        assert_receiving(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + READ));

        assert!(!conn.on_deadline(&h.at(READ - ms(1))));
        assert_receiving(&conn);
        assert!(conn.on_deadline(&h.at(READ)));
        assert_closed(&conn, CloseReason::ReadTimeout);
    }

    #[test]
    fn disabled_timeouts_give_no_deadline() {
        let h = Harness::with(Config {
            idle_timeout: None,
            read_timeout: None,
            ..config(Framing::Burst)
        });
        let (mut conn, mut stream) = conn_receiving(&h, b"");
        assert_eq!(h.deadline(&conn), None);
        assert!(!conn.on_deadline(&h.at(secs(1_000_000))));
        assert_receiving(&conn);

        stream.push_reads([data(b"abc"), Read::WouldBlock]);
        stream.push_writes([Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(1));
        assert_sending(&conn);
        assert_eq!(h.deadline(&conn), None);
        assert!(!conn.on_deadline(&h.at(secs(1_000_000))));
        assert_sending(&conn);

        // Lingering is bounded whatever the timeouts.
        h.ready(&mut conn, &mut stream, secs(2));
        assert_lingering(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + secs(2) + LINGER));
    }

    #[test]
    fn the_read_timeout_alone_bounds_receiving_but_not_sending() {
        let h = Harness::with(Config {
            idle_timeout: None,
            ..config(Framing::Burst)
        });
        let mut conn = h.connection();
        assert_eq!(h.deadline(&conn), Some(h.start + READ));

        let mut stream = ScriptedStream::new()
            .reading([data(b"abc"), Read::WouldBlock])
            .writing([Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(1));
        assert_sending(&conn);
        assert_eq!(h.deadline(&conn), None);
        assert!(!conn.on_deadline(&h.at(READ + secs(1))));
    }

    #[test]
    fn sending_is_bounded_by_idle_time_not_by_the_read_timeout() {
        let h = Harness::with(Config {
            read_timeout: Some(secs(5)),
            ..config(Framing::Burst)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new()
            .reading([data(b"abcdef"), Read::WouldBlock])
            .writing([Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(1));
        assert_sending(&conn);
        assert_eq!(h.deadline(&conn), Some(h.start + secs(1) + IDLE));
        assert!(
            !conn.on_deadline(&h.at(secs(6))),
            "the read timeout is over once the message is in"
        );

        // A short write is progress; a write that would block is not.
        stream.push_writes([Write::Accept(2), Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(3));
        stream.push_writes([Write::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(4));
        assert_eq!(h.deadline(&conn), Some(h.start + secs(3) + IDLE));

        assert!(!conn.on_deadline(&h.at(secs(3) + IDLE - ms(1))));
        assert_sending(&conn);
        assert!(conn.on_deadline(&h.at(secs(3) + IDLE)));
        assert_closed(&conn, CloseReason::IdleTimeout);
    }

    #[test]
    fn a_timer_before_the_deadline_changes_nothing_in_any_live_state() {
        let h = Harness::new(Framing::Burst);
        let (mut receiving, _s1) = conn_receiving(&h, b"");
        let (mut sending, _s2) = conn_sending(&h, b"abc");
        let (mut lingering, _s3) = conn_lingering(&h);

        assert!(!receiving.on_deadline(&h.at(IDLE - ms(1))));
        assert!(!sending.on_deadline(&h.at(IDLE - ms(1))));
        assert!(!lingering.on_deadline(&h.at(LINGER - ms(1))));

        assert_receiving(&receiving);
        assert_sending(&sending);
        assert_lingering(&lingering);
        assert_eq!(h.deadline(&receiving), Some(h.start + IDLE));
        assert_eq!(h.deadline(&sending), Some(h.start + IDLE));
        assert_eq!(h.deadline(&lingering), Some(h.start + LINGER));
    }

    #[test]
    fn the_longest_accepted_timeouts_do_not_overflow_the_clock() {
        // Deadlines are `Instant + Duration`, which panics on overflow, so
        // `Config::validate` caps every duration at `MAX_DURATION`...
        let too_long = Config {
            idle_timeout: Some(Duration::MAX),
            ..config(Framing::Burst)
        };
        assert!(too_long.validate().is_err());
        let too_long = Config {
            linger: Config::MAX_DURATION + secs(1),
            ..config(Framing::Burst)
        };
        assert!(too_long.validate().is_err());

        // ...and at the cap itself every deadline can still be computed.
        let h = Harness::with(Config {
            idle_timeout: Some(Config::MAX_DURATION),
            read_timeout: Some(Config::MAX_DURATION),
            linger: Config::MAX_DURATION,
            ..config(Framing::Burst)
        });
        assert!(h.config.validate().is_ok());
        let mut conn = h.connection();
        assert!(h.deadline(&conn).is_some());
        assert!(!conn.on_deadline(&h.at(secs(1_000_000))));

        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, Duration::ZERO);
        assert!(matches!(conn.state(), State::Lingering { .. }));
        assert!(h.deadline(&conn).is_some());
    }
}

// ---------------------------------------------------------------------------
// Shutdown cut-off
// ---------------------------------------------------------------------------

mod cut_off {
    use super::*;

    #[test]
    fn cut_off_closes_every_live_state_without_touching_the_socket() {
        let h = Harness::new(Framing::Burst);
        let (receiving, s1) = conn_receiving(&h, b"");
        let (sending, s2) = conn_sending(&h, b"abc");
        let (lingering, s3) = conn_lingering(&h);

        for (mut conn, stream) in [(receiving, s1), (sending, s2), (lingering, s3)] {
            let calls_before = stream.calls.len();
            let was = conn.state().to_string();
            conn.cut_off(&h.at(ms(1)));
            assert_closed(&conn, CloseReason::ShutdownCutOff);
            assert_eq!(stream.calls.len(), calls_before, "cut off from {was}");
            // Only a reply cut off part-way ends with a reset.
            assert_eq!(conn.closes_with_reset(), was == "Sending", "cut off from {was}");
        }
    }
}

// ---------------------------------------------------------------------------
// Read and write chunks
// ---------------------------------------------------------------------------

mod chunks {
    use super::*;

    #[test]
    fn no_read_asks_for_more_than_read_chunk() {
        let h = Harness::with(Config {
            read_chunk: 4,
            max_message: 10,
            ..config(Framing::Eof)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'z'; 50])]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        // Receiving: at most 4 per read and 11 (max_message + 1) in all;
        // then lingering drains the rest, still 4 at a time.
        assert_lingering(&conn);
        let sizes = stream.read_sizes();
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
        assert_eq!(sizes[..3], [4, 4, 3]);
        assert_eq!(h.stats().bytes_discarded, 50 - 11);
    }

    #[test]
    fn a_message_is_read_in_read_chunk_pieces_and_still_reversed_exactly() {
        let h = Harness::with(Config {
            read_chunk: 1,
            ..config(Framing::Line)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"one byte at a time\n")]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        assert_reply_then_shutdown(&stream, b"emit a ta etyb eno\n");
        let sizes = stream.read_sizes();
        assert!(sizes.iter().all(|&n| n == 1), "{sizes:?}");
    }

    #[test]
    fn no_write_offers_more_than_write_chunk() {
        let h = Harness::with(Config {
            write_chunk: Some(3),
            ..config(Framing::Burst)
        });
        let (mut conn, mut stream) = conn_sending(&h, b"0123456789");

        h.ready(&mut conn, &mut stream, ms(1));

        assert_reply_then_shutdown(&stream, b"0123456789");
        assert_eq!(stream.write_offers(), [3, 3, 3, 3, 1]);
        // Offering less on purpose is not a partial write.
        assert_eq!(h.stats().partial_writes, 0);
    }

    #[test]
    fn a_short_write_within_a_write_chunk_is_partial() {
        let h = Harness::with(Config {
            write_chunk: Some(3),
            ..config(Framing::Burst)
        });
        let (mut conn, mut stream) = conn_sending(&h, b"012345");
        stream.push_writes([Write::Accept(2)]);

        h.ready(&mut conn, &mut stream, ms(1));

        assert_reply_then_shutdown(&stream, b"012345");
        assert_eq!(stream.write_offers(), [3, 3, 3, 1]);
        assert_eq!(h.stats().partial_writes, 1);
    }
}

// ---------------------------------------------------------------------------
// The turn budget
// ---------------------------------------------------------------------------

mod turn_budget {
    use super::*;

    /// Bounds every loop below: enough turns for several budgets' worth.
    const MAX_TURNS: usize = 20;

    #[test]
    fn a_lingering_client_that_never_pauses_yields_the_loop() {
        // Chunks large enough that the bytes run out before the calls do.
        const CHUNK: usize = 64 * 1024;
        let h = Harness::with(Config {
            read_chunk: CHUNK,
            ..config(Framing::Burst)
        });
        let (mut conn, mut stream) = conn_lingering(&h);
        let flood = 2 * TURN_BUDGET + 1000;
        stream.push_reads([Read::Flood {
            byte: b'f',
            count: flood,
        }]);

        let mark = stream.mark();
        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Yield);
        let first_turn = stream.bytes_read_since(mark);
        assert!(
            first_turn <= TURN_BUDGET && first_turn + CHUNK > TURN_BUDGET,
            "yielded after {first_turn} bytes; budget {TURN_BUDGET}"
        );
        assert_lingering(&conn);

        let mut turns = 1;
        loop {
            let mark = stream.mark();
            let turn = h.ready(&mut conn, &mut stream, ms(1));
            assert!(stream.bytes_read_since(mark) <= TURN_BUDGET);
            turns += 1;
            if turn == Turn::Wait {
                break;
            }
            assert!(turns < MAX_TURNS, "still yielding after {turns} turns");
        }
        assert_lingering(&conn);
        assert_eq!(discarded(&conn), flood as u64);
        assert_eq!(h.deadline(&conn), Some(h.start + LINGER));
    }

    #[test]
    fn a_huge_reply_to_a_stream_that_takes_everything_yields_the_loop() {
        let size = 2 * TURN_BUDGET + TURN_BUDGET / 2;
        let h = Harness::with(Config {
            max_message: 4 * TURN_BUDGET,
            read_chunk: 64 * 1024,
            ..config(Framing::Eof)
        });
        let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(message.clone()), Read::Eof]);

        let mut yielded_while_sending = false;
        let mut turns = 0;
        loop {
            let before = h.stats();
            let turn = h.ready(&mut conn, &mut stream, ms(1));
            let after = h.stats();
            let moved = (after.bytes_in - before.bytes_in) + (after.bytes_out - before.bytes_out);
            assert!(moved as usize <= TURN_BUDGET, "one turn moved {moved} bytes");
            turns += 1;
            if turn == Turn::Wait {
                break;
            }
            if matches!(conn.state(), State::Sending { .. }) {
                yielded_while_sending = true;
                assert_eq!(conn.interest(), Some(Interest::WRITABLE));
                assert_eq!(stream.shutdowns(), 0, "shut down before the whole reply");
            }
            assert!(turns < MAX_TURNS, "still yielding after {turns} turns");
        }
        assert!(yielded_while_sending, "a reply of {size} bytes never yielded");
        assert_reply_then_shutdown(&stream, &reversed(&message));
        assert_closed(&conn, CloseReason::Completed);
        assert_eq!(h.stats().partial_writes, 0);
    }
}

// ---------------------------------------------------------------------------
// Abortive close: a reply cut off part-way ends with a reset
// ---------------------------------------------------------------------------

mod abortive_close {
    use super::*;

    /// A connection in `Sending` with `written` of the 6 reply bytes out.
    fn conn_sending_partly(h: &Harness, written: usize) -> (Connection, ScriptedStream) {
        let (mut conn, mut stream) = conn_sending(h, b"abcdef");
        if written > 0 {
            stream.push_writes([Write::Accept(written), Write::WouldBlock]);
            assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);
        }
        assert_eq!(sending_progress(&conn), (written, 6));
        (conn, stream)
    }

    #[test]
    fn an_idle_timeout_while_sending_closes_with_a_reset() {
        for written in [0, 2] {
            let h = Harness::new(Framing::Burst);
            let (mut conn, _stream) = conn_sending_partly(&h, written);
            assert!(conn.on_deadline(&h.at(ms(1) + IDLE)));
            assert_closed(&conn, CloseReason::IdleTimeout);
            assert!(conn.closes_with_reset(), "{written} of 6 bytes written");
            assert_eq!(
                conn.state().to_string(),
                "Closed(idle timeout, reply cut off: reset)"
            );
        }
    }

    #[test]
    fn abandoning_or_failing_while_sending_closes_with_a_reset() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, _stream) = conn_sending_partly(&h, 2);
        conn.abandon(CloseReason::IoError, &h.at(ms(1)));
        assert_closed(&conn, CloseReason::IoError);
        assert!(conn.closes_with_reset());

        let (mut conn, mut stream) = conn_sending_partly(&h, 2);
        stream.push_writes([Write::Error(ErrorKind::Other)]);
        h.ready(&mut conn, &mut stream, ms(2));
        assert_closed(&conn, CloseReason::IoError);
        assert!(conn.closes_with_reset());
    }

    #[test]
    fn a_reply_written_in_full_never_closes_with_a_reset() {
        let h = Harness::new(Framing::Burst);
        // Lingering after the reply, then timed out, closed or cut off.
        let (mut conn, _stream) = conn_lingering(&h);
        assert!(conn.on_deadline(&h.at(LINGER)));
        assert!(!conn.closes_with_reset());
        let (mut conn, _stream) = conn_lingering(&h);
        conn.cut_off(&h.at(ms(1)));
        assert!(!conn.closes_with_reset());
        // The whole reply went out, then the shutdown failed.
        let (mut conn, mut stream) = conn_sending(&h, b"abc");
        stream.fail_shutdown(ErrorKind::Other);
        h.ready(&mut conn, &mut stream, ms(1));
        assert_closed(&conn, CloseReason::IoError);
        assert!(!conn.closes_with_reset());
    }

    #[test]
    fn a_connection_abandoned_while_receiving_closes_without_a_reset() {
        let h = Harness::new(Framing::Line);
        let (mut conn, _stream) = conn_receiving(&h, b"half a li");
        assert!(conn.on_deadline(&h.at(IDLE)));
        assert_closed(&conn, CloseReason::IdleTimeout);
        assert!(!conn.closes_with_reset());
    }
}

// ---------------------------------------------------------------------------
// Memory follows the bytes that arrived
// ---------------------------------------------------------------------------

mod memory {
    use super::*;

    fn capacity_while_receiving(conn: &Connection) -> (usize, usize) {
        match conn.state() {
            State::Receiving { received, .. } => (received.len(), received.capacity()),
            other => panic!("expected Receiving, got {other}"),
        }
    }

    /// Whatever `read_chunk` is, the message buffer holds at most about
    /// twice what has arrived (8 bytes at least: `Vec`'s smallest
    /// allocation), however the bytes are cut into reads.
    #[test]
    fn the_message_buffer_grows_with_the_bytes_delivered_not_with_read_chunk() {
        for read_chunk in [1, 4, 16 * 1024, 1024 * 1024] {
            let h = Harness::with(Config {
                read_chunk,
                max_message: 4 * 1024 * 1024,
                ..config(Framing::Eof)
            });
            let (mut conn, mut stream) = conn_receiving(&h, b"");
            let mut delivered = 0;
            for piece in [2, 1, 5, 13, 100, 1000, 3000] {
                stream.push_reads([Read::Data(vec![b'm'; piece]), Read::WouldBlock]);
                // A piece may take several turns with tiny chunks.
                for _ in 0..piece {
                    if h.ready(&mut conn, &mut stream, ms(1)) == Turn::Wait {
                        break;
                    }
                }
                delivered += piece;
                let (len, capacity) = capacity_while_receiving(&conn);
                assert_eq!(len, delivered, "read_chunk {read_chunk}");
                assert!(
                    capacity <= (2 * delivered).max(8),
                    "read_chunk {read_chunk}: {capacity} bytes held for {delivered} delivered"
                );
            }
        }
    }

    #[test]
    fn the_scratch_buffer_is_read_chunk_capped_by_the_turn_budget() {
        let sized = |read_chunk| {
            scratch_len(&Config {
                read_chunk,
                ..Config::default()
            })
        };
        assert_eq!(sized(1), 1);
        assert_eq!(sized(16 * 1024), 16 * 1024);
        assert_eq!(sized(64 * 1024 * 1024), TURN_BUDGET);
    }
}

// ---------------------------------------------------------------------------
// A turn is bounded in calls as well as bytes
// ---------------------------------------------------------------------------

mod turn_calls {
    use super::*;

    fn socket_calls(calls: &[Call]) -> usize {
        calls
            .iter()
            .filter(|call| matches!(call, Call::Read { .. } | Call::Write { .. }))
            .count()
    }

    #[test]
    fn one_byte_reads_yield_after_turn_calls() {
        let h = Harness::with(Config {
            read_chunk: 1,
            max_message: 1000,
            ..config(Framing::Eof)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'r'; 200]), Read::Eof]);

        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Yield);
        assert_eq!(socket_calls(&stream.calls), TURN_CALLS);
        assert_receiving(&conn);
        assert_eq!(h.stats().turns_yielded, 1);
    }

    #[test]
    fn one_byte_writes_yield_after_turn_calls() {
        let h = Harness::with(Config {
            write_chunk: Some(1),
            ..config(Framing::Burst)
        });
        // 30 one-byte writes fit in a turn (then the lingering read).
        let (mut conn, mut stream) = conn_sending(&h, &[b'w'; 30]);
        let mark = stream.mark();
        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);
        assert_eq!(socket_calls(stream.calls_since(mark)), 30 + 1);

        // 200 do not.

        let h = Harness::with(Config {
            write_chunk: Some(1),
            max_message: 1000,
            ..config(Framing::Eof)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'w'; 200]), Read::Eof]);
        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Yield);
        assert_eq!(socket_calls(&stream.calls), TURN_CALLS, "reads, then writes");
        let reads = stream.read_sizes().len();
        let mark = stream.mark();
        assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Yield);
        assert_eq!(stream.write_offers().len(), TURN_CALLS - reads + TURN_CALLS);
        assert_eq!(socket_calls(stream.calls_since(mark)), TURN_CALLS);
    }

    /// The ordinary case is untouched: a small client served with one-byte
    /// chunks still finishes within a few turns.
    #[test]
    fn a_small_client_with_one_byte_chunks_is_served_within_two_turns() {
        let h = Harness::with(Config {
            read_chunk: 1,
            write_chunk: Some(1),
            ..config(Framing::Burst)
        });
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"Hello, world!"), Read::WouldBlock]);
        let mut turns = 1;
        while h.ready(&mut conn, &mut stream, ms(1)) == Turn::Yield {
            turns += 1;
        }
        assert!(turns <= 2, "{turns} turns");
        assert_reply_then_shutdown(&stream, b"!dlrow ,olleH");
    }
}

// ---------------------------------------------------------------------------
// The transition table
// ---------------------------------------------------------------------------

thread_local! {
    /// Every transition `apply` made on this thread, in order.
    static TRANSITIONS_TAKEN: RefCell<Vec<(StateKind, Event, StateKind)>> = const { RefCell::new(Vec::new()) };
}

/// Called by `apply` in test builds.
pub(super) fn record_transition(transition: (StateKind, Event, StateKind)) {
    TRANSITIONS_TAKEN.with(|taken| taken.borrow_mut().push(transition));
}

mod transitions {
    use super::*;

    /// One scenario per row of [`TRANSITIONS`], each ending with the row's
    /// transition; together they must take every row, so the table holds
    /// no transition the code cannot make.
    #[test]
    fn every_row_of_the_table_is_taken_by_some_input() {
        let burst = Harness::new(Framing::Burst);
        let line = Harness::new(Framing::Line);
        let no_linger = Harness::with(Config {
            linger: Duration::ZERO,
            ..config(Framing::Burst)
        });
        // Receiving → Sending → Lingering; Lingering → Closed on the client's end.
        let (mut conn, mut stream) = conn_lingering(&burst);
        stream.push_reads([Read::Eof]);
        burst.ready(&mut conn, &mut stream, ms(1));
        // Receiving → Lingering (refused); then the linger runs out.
        let (mut conn, _) = conn_lingering_after_oversize(&burst);
        conn.on_deadline(&burst.at(LINGER));
        // Receiving → Closed (refused, linger off).
        let mut conn = no_linger.connection();
        let mut stream = ScriptedStream::new().reading([Read::Data(vec![b'x'; MAX_MESSAGE + 1])]);
        no_linger.ready(&mut conn, &mut stream, ms(1));
        // Receiving → Closed: timed out, failed, abandoned.
        let (mut conn, _) = conn_receiving(&line, b"half");
        conn.on_deadline(&line.at(IDLE));
        let (mut conn, mut stream) = conn_receiving(&line, b"half");
        stream.push_reads([Read::Error(ErrorKind::ConnectionReset)]);
        line.ready(&mut conn, &mut stream, ms(1));
        conn_receiving(&line, b"half").0.cut_off(&line.at(ms(1)));
        // Sending → Closed: replied to a finished client, timed out,
        // failed, abandoned.
        let mut conn = burst.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::Eof]);
        burst.ready(&mut conn, &mut stream, ms(1));
        let (mut conn, _) = conn_sending(&burst, b"abc");
        conn.on_deadline(&burst.at(IDLE));
        let (mut conn, mut stream) = conn_sending(&burst, b"abc");
        stream.push_writes([Write::Error(ErrorKind::BrokenPipe)]);
        burst.ready(&mut conn, &mut stream, ms(1));
        conn_sending(&burst, b"abc").0.cut_off(&burst.at(ms(1)));
        // Lingering → Closed: failed, abandoned.
        let (mut conn, mut stream) = conn_lingering(&burst);
        stream.push_reads([Read::Error(ErrorKind::ConnectionReset)]);
        burst.ready(&mut conn, &mut stream, ms(1));
        conn_lingering(&burst).0.cut_off(&burst.at(ms(1)));

        let taken = TRANSITIONS_TAKEN.with(|taken| taken.borrow().clone());
        // The `ReadingProxyHeader` rows are taken in proxy_tests.rs.
        for row in TRANSITIONS
            .iter()
            .filter(|row| row.0 != StateKind::ReadingProxyHeader)
        {
            assert!(taken.contains(row), "no input takes {row:?}");
        }
        // And `apply` checked each one against the table as it went.
        assert!(taken.iter().all(|transition| TRANSITIONS.contains(transition)));
    }

    #[test]
    fn nothing_leaves_closed_and_every_live_state_can_close() {
        assert!(TRANSITIONS.iter().all(|(from, _, _)| *from != StateKind::Closed));
        for live in [StateKind::Receiving, StateKind::Sending, StateKind::Lingering] {
            assert!(
                TRANSITIONS
                    .iter()
                    .any(|(from, _, to)| *from == live && *to == StateKind::Closed),
                "{live:?} cannot close"
            );
        }
    }

    #[test]
    fn byte_counts_in_logs_are_pluralised() {
        assert_eq!(super::super::bytes(1usize).to_string(), "1 byte");
        assert_eq!(super::super::bytes(0usize).to_string(), "0 bytes");
        assert_eq!(super::super::bytes(2u64).to_string(), "2 bytes");
    }
}

// ---------------------------------------------------------------------------
// Any schedule the kernel might choose
// ---------------------------------------------------------------------------

/// The tests above each pin down one schedule. Here proptest picks the
/// schedule: how the message is cut into reads, where reads would block or
/// are interrupted, how much each write takes, the chunk sizes. Whatever it
/// picks, the client must get the exact reply, then end of stream, and the
/// connection must end as completed.
mod any_schedule {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// What the kernel does before a piece of the message arrives.
    fn hiccup(code: u8) -> Option<Read> {
        match code {
            0 => Some(Read::WouldBlock),
            1 => Some(Read::Interrupted),
            _ => None,
        }
    }

    fn write_step((code, n): (u8, usize)) -> Write {
        match code {
            0 => Write::WouldBlock,
            1 => Write::Interrupted,
            _ => Write::Accept(n),
        }
    }

    /// The read script: the message cut into pieces of the given sizes, each
    /// preceded by its hiccup, then the client's end of stream.
    fn reads(message: &[u8], cuts: &[(usize, u8)]) -> Vec<Read> {
        let mut script = Vec::new();
        let mut rest = message;
        for &(size, code) in cuts {
            script.extend(hiccup(code));
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            if !piece.is_empty() {
                script.push(data(piece));
            }
            rest = tail;
        }
        if !rest.is_empty() {
            script.push(data(rest));
        }
        script.push(Read::Eof);
        script
    }

    /// Gives the connection readiness events until it closes, as the loop
    /// would; every scripted WouldBlock is used up by one event, so this ends.
    fn drive(harness: &Harness, stream: &mut ScriptedStream) -> Connection {
        let mut conn = harness.connection();
        for event in 0..10_000 {
            if conn.close_reason().is_some() {
                return conn;
            }
            harness.ready(&mut conn, stream, ms(event));
        }
        panic!("not closed after 10,000 events: {}", conn.state());
    }

    fn check(framing: Framing, message: Vec<u8>, expected: Vec<u8>, schedule: Schedule) {
        let harness = Harness::with(Config {
            framing,
            max_message: 4096,
            read_chunk: schedule.read_chunk,
            write_chunk: schedule.write_chunk,
            ..config(framing)
        });
        let mut stream = ScriptedStream::new()
            .reading(reads(&message, &schedule.cuts))
            .writing(schedule.writes.into_iter().map(write_step));
        let conn = drive(&harness, &mut stream);

        assert_eq!(conn.close_reason(), Some(CloseReason::Completed));
        assert_eq!(stream.written, expected);
        assert_eq!(stream.shutdowns(), 1);
        assert_eq!(stream.shutdown_after, Some(expected.len()));
        assert!(
            stream
                .read_sizes()
                .iter()
                .all(|&asked| asked <= schedule.read_chunk)
        );
        let write_limit = schedule.write_chunk.unwrap_or(usize::MAX);
        assert!(
            stream
                .write_offers()
                .iter()
                .all(|&offered| offered <= write_limit)
        );
        let stats = harness.stats();
        assert_eq!(stats.replies_completed, 1);
        assert_eq!(stats.bytes_in as usize, message.len());
        assert_eq!(stats.bytes_out as usize, expected.len());
    }

    #[derive(Debug)]
    struct Schedule {
        cuts: Vec<(usize, u8)>,
        writes: Vec<(u8, usize)>,
        read_chunk: usize,
        write_chunk: Option<usize>,
    }

    fn schedule() -> impl Strategy<Value = Schedule> {
        (
            vec((0usize..40, 0u8..3), 0..24),
            // A socket write takes at least one byte or fails: never Ok(0).
            vec((0u8..3, 1usize..40), 0..48),
            1usize..24,
            proptest::option::of(1usize..24),
        )
            .prop_map(|(cuts, writes, read_chunk, write_chunk)| Schedule {
                cuts,
                writes,
                read_chunk,
                write_chunk,
            })
    }

    proptest! {
        #[test]
        fn eof_framing_replies_exactly_under_any_schedule(
            message in vec(any::<u8>(), 0..300),
            schedule in schedule(),
        ) {
            let expected = reversed(&message);
            check(Framing::Eof, message, expected, schedule);
        }

        #[test]
        fn line_framing_replies_exactly_under_any_schedule(
            content in vec(any::<u8>().prop_filter("one line", |&b| b != b'\n' && b != b'\r'), 0..300),
            schedule in schedule(),
        ) {
            let mut line = content.clone();
            line.push(b'\n');
            let mut expected = reversed(&content);
            expected.push(b'\n');
            check(Framing::Line, line, expected, schedule);
        }
    }
}

// ---------------------------------------------------------------------------
// What an observer sees
// ---------------------------------------------------------------------------

/// The same behaviour as the tests above, asserted on the events the
/// connection reports through its `Context` instead of on log text or
/// internal state: what `examples/timeline.rs` draws.
mod observed {
    use super::*;
    use crate::observer::{Event as Observed, Operation};

    fn read(bytes: usize) -> Observed {
        Observed::Read { connection: 1, bytes }
    }

    fn wrote(written: usize, offered: usize) -> Observed {
        Observed::Wrote {
            connection: 1,
            written,
            offered,
        }
    }

    fn would_block(operation: Operation) -> Observed {
        Observed::WouldBlock {
            connection: 1,
            operation,
        }
    }

    fn state(from: StateKind, to: StateKind) -> Observed {
        Observed::State {
            connection: 1,
            from,
            to,
        }
    }

    #[test]
    fn a_burst_exchange_reports_each_call_and_each_state_change_in_order() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new().reading([data(b"abc"), Read::WouldBlock]);

        assert_eq!(h.ready(&mut conn, &mut stream, Duration::ZERO), Turn::Wait);

        assert_eq!(
            h.events(),
            [
                read(3),
                // In burst framing this WouldBlock is where the message ends.
                would_block(Operation::Read),
                state(StateKind::Receiving, StateKind::Sending),
                wrote(3, 3),
                state(StateKind::Sending, StateKind::Lingering),
                // Lingering discards at once what is already waiting.
                would_block(Operation::Read),
            ]
        );
    }

    #[test]
    fn a_partial_write_reports_fewer_bytes_than_offered_then_would_block() {
        let h = Harness::new(Framing::Burst);
        let mut conn = h.connection();
        let mut stream = ScriptedStream::new()
            .reading([data(b"abcdef"), Read::WouldBlock])
            .writing([Write::Accept(2), Write::WouldBlock]);

        h.ready(&mut conn, &mut stream, Duration::ZERO);

        let events = h.events();
        assert_eq!(
            events[events.len() - 2..],
            [wrote(2, 6), would_block(Operation::Write)],
            "all events: {events:?}"
        );
        assert_sending(&conn);
    }

    #[test]
    fn lingering_reports_discarded_reads_and_the_client_closing() {
        let h = Harness::new(Framing::Burst);
        let (mut conn, mut stream) = conn_lingering(&h);
        h.events();
        stream.push_reads([data(b"more"), Read::Eof]);

        h.ready(&mut conn, &mut stream, ms(1));

        assert_eq!(
            h.events(),
            [read(4), read(0), state(StateKind::Lingering, StateKind::Closed)]
        );
    }

    #[test]
    fn timers_and_cut_offs_report_their_state_change_too() {
        let h = Harness::new(Framing::Line);
        let (mut conn, _stream) = conn_receiving(&h, b"half");
        h.events();
        assert!(conn.on_deadline(&h.at(IDLE)));
        assert_eq!(h.events(), [state(StateKind::Receiving, StateKind::Closed)]);

        let (mut conn, _stream) = conn_receiving(&h, b"half");
        h.events();
        conn.cut_off(&h.at(ms(1)));
        assert_eq!(h.events(), [state(StateKind::Receiving, StateKind::Closed)]);
        // Already closed: nothing happens, so nothing is reported.
        conn.cut_off(&h.at(ms(2)));
        assert_eq!(h.events(), []);
    }
}

/// The `ReadingProxyHeader` state (`--proxy-protocol`), on this harness.
#[path = "proxy_tests.rs"]
mod proxy_tests;
