//! Runs a `Script` through a real `Connection`, as the server loop
//! would, and asserts every invariant on the way and at the end:
//!
//! - nothing panics (a panic in the connection fails the run like an
//!   assertion does);
//! - the connection always ends closed, for the reason the model gives;
//! - the client gets exactly the model's reply, or a prefix of it, and a
//!   reply that completes is the exact reversal of the framed message;
//! - no read asks for 0 bytes, for more than `read_chunk`, or, while
//!   receiving, for more than `max_message + 1` bytes in all, so the
//!   buffered message never exceeds `max_message + 1`; no write offers more
//!   than `write_chunk`; sending never reads, and nothing is written after
//!   the shutdown;
//! - a reply cut off part-way closes with a reset, and no other close does;
//! - no turn makes more than `TURN_CALLS` read and write calls, and a
//!   turn yields only when it has spent them (or its byte budget);
//! - a timer that fires before the deadline changes nothing.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use super::model::expect;
use super::script::{IDLE, LINGER, READ, ReadStep, Script, Then, WriteStep};
use crate::connection::{Connection, Context, Name, State, TURN_BUDGET, TURN_CALLS, Turn, scratch_len};
use crate::stats::Stats;
use crate::transport::Transport;

/// A `Transport` that answers from a script and checks each call the
/// connection makes.
struct ScriptedTransport {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
    shutdown_fails: Option<ErrorKind>,
    then: Then,
    max_message: usize,
    read_chunk: usize,
    write_chunk: usize,
    /// Scripted answers given so far (the answers after the script ran out
    /// do not count): a turn that ends waiting without one is waiting on a
    /// script that has run out.
    answers: usize,
    /// Read and write calls in the current turn.
    calls_this_turn: usize,
    /// Bytes read and written in the current turn.
    bytes_this_turn: usize,
    /// Bytes delivered by reads before the first write or shutdown: the
    /// message as the connection buffered it.
    received: usize,
    /// Every byte a write took, in order.
    written: Vec<u8>,
    writes_made: usize,
    shutdowns: usize,
}

fn error(kind: ErrorKind) -> io::Error {
    io::Error::new(kind, format!("scripted {kind:?}"))
}

impl ScriptedTransport {
    fn new(script: &Script) -> Self {
        let config = script.setup.config();
        ScriptedTransport {
            reads: script.reads.iter().cloned().collect(),
            writes: script.writes.iter().copied().collect(),
            shutdown_fails: script.shutdown_fails,
            then: script.then,
            max_message: config.max_message,
            read_chunk: config.read_chunk,
            write_chunk: config.write_chunk.unwrap_or(usize::MAX),
            answers: 0,
            calls_this_turn: 0,
            bytes_this_turn: 0,
            received: 0,
            written: Vec::new(),
            writes_made: 0,
            shutdowns: 0,
        }
    }
}

impl Transport for ScriptedTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls_this_turn += 1;
        let asked = buf.len();
        assert!(
            asked > 0,
            "a read asked for 0 bytes: its Ok(0) would look like end of stream"
        );
        assert!(
            asked <= self.read_chunk,
            "a read asked for {asked} bytes, read_chunk is {}",
            self.read_chunk
        );
        let receiving = self.writes_made == 0 && self.shutdowns == 0;
        assert!(
            receiving || self.shutdowns > 0,
            "a read while sending: the reply is not written yet"
        );
        if receiving {
            assert!(
                self.received + asked <= self.max_message.saturating_add(1),
                "a read asked for {asked} bytes with {} buffered: past max_message ({}) + 1",
                self.received,
                self.max_message
            );
        }
        let Some(step) = self.reads.pop_front() else {
            return match self.then {
                Then::Eof => Ok(0),
                Then::Deadline | Then::CutOff => Err(error(ErrorKind::WouldBlock)),
            };
        };
        self.answers += 1;
        match step {
            ReadStep::Read(mut bytes) => {
                let n = bytes.len().min(asked);
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    bytes.drain(..n);
                    self.reads.push_front(ReadStep::Read(bytes));
                }
                if receiving {
                    self.received += n;
                }
                self.bytes_this_turn += n;
                Ok(n)
            }
            ReadStep::WouldBlock => Err(error(ErrorKind::WouldBlock)),
            ReadStep::Interrupted => Err(error(ErrorKind::Interrupted)),
            ReadStep::Eof => Ok(0),
            ReadStep::Error(kind) => Err(error(kind)),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls_this_turn += 1;
        self.writes_made += 1;
        let offered = buf.len();
        assert_eq!(self.shutdowns, 0, "a write after shutdown(Write)");
        assert!(offered > 0, "a write offered nothing");
        assert!(
            offered <= self.write_chunk,
            "a write offered {offered} bytes, write_chunk is {}",
            self.write_chunk
        );
        let took = match self.writes.pop_front() {
            None => match self.then {
                Then::Eof => Ok(offered),
                Then::Deadline | Then::CutOff => Err(error(ErrorKind::WouldBlock)),
            },
            Some(step) => {
                self.answers += 1;
                match step {
                    WriteStep::Write(n) => Ok(n.min(offered)),
                    WriteStep::WouldBlock => Err(error(ErrorKind::WouldBlock)),
                    WriteStep::Interrupted => Err(error(ErrorKind::Interrupted)),
                    WriteStep::Error(kind) => Err(error(kind)),
                }
            }
        };
        if let Ok(n) = took {
            self.written.extend_from_slice(&buf[..n]);
            self.bytes_this_turn += n;
        }
        took
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdowns += 1;
        assert_eq!(self.shutdowns, 1, "shutdown(Write) called twice");
        match self.shutdown_fails {
            Some(kind) => Err(error(kind)),
            None => Ok(()),
        }
    }
}

/// Runs `script` through a connection and asserts the invariants listed
/// in the module docs; panics with a one-line reason on the first that
/// breaks.
pub fn check(script: &Script) {
    let config = script.setup.config();
    let stats = Stats::default();
    let start = Instant::now();
    let mut scratch = vec![0; scratch_len(&config)];
    let mut io = ScriptedTransport::new(script);
    let mut conn = Connection::new(
        Name {
            id: 1,
            peer: None,
            via: None,
        },
        start,
    );
    let timer = |now: Instant| Context {
        config: &config,
        stats: &stats,
        now,
        scratch: &mut [],
        observer: None,
        admission: None,
    };

    // Every event either takes a scripted answer, moves bytes, or ends the
    // script, so a connection that is still open after this many is stuck.
    let data: usize = script
        .reads
        .iter()
        .map(|step| match step {
            ReadStep::Read(bytes) => bytes.len(),
            _ => 1,
        })
        .sum();
    let limit = 16 + 2 * (data + script.writes.len() + config.max_message.min(1 << 20));
    let mut now = start;
    let mut events = 0;
    while conn.close_reason().is_none() {
        events += 1;
        assert!(
            events <= limit,
            "still {} after {limit} readiness events",
            conn.state()
        );
        // Time moves a little per event, never near a deadline.
        now += Duration::from_millis(1);
        io.calls_this_turn = 0;
        io.bytes_this_turn = 0;
        let answers = io.answers;
        let turn = conn.on_ready(
            &mut io,
            &mut Context {
                config: &config,
                stats: &stats,
                now,
                scratch: &mut scratch,
                observer: None,
                admission: None,
            },
        );
        assert!(
            io.calls_this_turn <= TURN_CALLS,
            "a turn made {} calls, the bound is {TURN_CALLS}",
            io.calls_this_turn
        );
        if let State::Receiving { received, .. } = conn.state() {
            assert!(
                received.len() <= config.max_message.saturating_add(1),
                "{} bytes buffered, max_message is {}",
                received.len(),
                config.max_message
            );
        }
        if conn.close_reason().is_some() {
            break;
        }
        match turn {
            Turn::Yield => assert!(
                io.calls_this_turn == TURN_CALLS || io.bytes_this_turn >= TURN_BUDGET,
                "yielded after {} calls and {} bytes, before the budget ran out",
                io.calls_this_turn,
                io.bytes_this_turn
            ),
            Turn::Wait => {
                assert!(
                    !conn.on_deadline(&timer(now)),
                    "a timer before the deadline closed the connection"
                );
                if io.answers == answers {
                    // Waiting on a script that has run out: the client's
                    // silence ends as the script says.
                    match script.then {
                        Then::Eof => panic!(
                            "{} waits, but the client has closed and takes everything",
                            conn.state()
                        ),
                        Then::Deadline => {
                            let late = now + READ + IDLE + LINGER;
                            assert!(
                                conn.on_deadline(&timer(late)),
                                "{} outlived its deadline",
                                conn.state()
                            );
                        }
                        Then::CutOff => conn.cut_off(&timer(now)),
                    }
                }
            }
        }
    }

    let expected = expect(script);
    let reason = conn.close_reason();
    assert_eq!(reason, Some(expected.reason), "closed for the wrong reason");
    match &expected.reply {
        None => assert!(
            io.written.is_empty(),
            "wrote {} bytes but framed no message",
            io.written.len()
        ),
        Some(reply) => {
            assert!(
                reply.starts_with(&io.written),
                "the client got bytes that are not the reply"
            );
            assert_eq!(
                io.written.len(),
                expected.written,
                "the client got the wrong amount of the reply"
            );
        }
    }
    let completed = expected.reply.as_ref().is_some_and(|reply| io.written == *reply);
    let cut_off = expected
        .reply
        .as_ref()
        .is_some_and(|reply| io.written.len() < reply.len());
    assert_eq!(
        conn.closes_with_reset(),
        cut_off,
        "a reset close must mean a reply cut off part-way"
    );
    if completed {
        assert_eq!(
            io.shutdowns, 1,
            "a completed reply is followed by shutdown(Write)"
        );
    }
    let counted = stats.snapshot();
    assert_eq!(
        counted.replies_completed,
        u64::from(completed),
        "replies_completed"
    );
    assert_eq!(counted.bytes_out, io.written.len() as u64, "bytes_out");
}
