//! A client's whole conversation with one connection, as a script: what
//! each `read` returns, how much each `write` takes, and how the client
//! ends once the script runs out.
//!
//! The steps print as a story, so a failing case shrunk by proptest, or a
//! crash found by libFuzzer, reads like what happened:
//! `reads: [Read(b"ab\n"), WouldBlock, Eof], writes: [Write(1), WouldBlock]`.

use std::fmt;
use std::io::ErrorKind;
use std::time::Duration;

use crate::{Config, Framing};

/// What one `read` call returns.
#[derive(Clone, PartialEq, Eq)]
pub enum ReadStep {
    /// These bytes have arrived; never empty (an empty read is `Eof`). A
    /// buffer smaller than them takes a prefix, and the rest stays for the
    /// next read, as in a kernel buffer.
    Read(Vec<u8>),
    /// Nothing has arrived: the call would block. The connection waits for
    /// its next readiness event.
    WouldBlock,
    /// A signal interrupted the call.
    Interrupted,
    /// The client shut down its write half: `Ok(0)`.
    Eof,
    /// The call failed.
    Error(ErrorKind),
}

impl fmt::Debug for ReadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadStep::Read(bytes) => write!(f, "Read(b\"{}\")", bytes.escape_ascii()),
            ReadStep::WouldBlock => f.write_str("WouldBlock"),
            ReadStep::Interrupted => f.write_str("Interrupted"),
            ReadStep::Eof => f.write_str("Eof"),
            ReadStep::Error(kind) => write!(f, "Error({kind:?})"),
        }
    }
}

/// What one `write` call does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// Takes at most this many bytes of what is offered. Fewer than offered
    /// is a short write; `Write(0)` is a write that took nothing (`Ok(0)`).
    Write(usize),
    /// The send buffer is full: the call would block.
    WouldBlock,
    /// A signal interrupted the call.
    Interrupted,
    /// The call failed.
    Error(ErrorKind),
}

impl fmt::Debug for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteStep::Write(n) => write!(f, "Write({n})"),
            WriteStep::WouldBlock => f.write_str("WouldBlock"),
            WriteStep::Interrupted => f.write_str("Interrupted"),
            WriteStep::Error(kind) => write!(f, "Error({kind:?})"),
        }
    }
}

/// How the client ends once the script has run out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// It half-closes and reads everything: further reads return end of
    /// stream and further writes take all that is offered.
    Eof,
    /// It goes silent: further reads and writes would block, until the
    /// connection's deadline passes.
    Deadline,
    /// It goes silent until the server's shutdown cuts the connection off.
    CutOff,
}

/// The server settings a script runs under: the ones that change what a
/// connection does with the bytes. Timeouts are long (an hour and more), so
/// only the harness's expired deadline ends a connection by time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Where a message ends.
    pub framing: Framing,
    /// `--max-message`.
    pub max_message: usize,
    /// `--read-chunk`; at least 1.
    pub read_chunk: usize,
    /// `--write-chunk`; at least 1 when set.
    pub write_chunk: Option<usize>,
    /// Whether the connection lingers after its reply or refusal.
    pub linger: bool,
}

/// `--idle-timeout` under a script.
pub(crate) const IDLE: Duration = Duration::from_secs(3600);
/// `--read-timeout` under a script.
pub(crate) const READ: Duration = Duration::from_secs(2 * 3600);
/// `--linger` under a script that lingers.
pub(crate) const LINGER: Duration = Duration::from_secs(3600);

impl Setup {
    /// The server configuration.
    pub fn config(&self) -> Config {
        Config {
            framing: self.framing,
            max_message: self.max_message,
            read_chunk: self.read_chunk.max(1),
            write_chunk: self.write_chunk.map(|chunk| chunk.max(1)),
            idle_timeout: Some(IDLE),
            read_timeout: Some(READ),
            linger: if self.linger { LINGER } else { Duration::ZERO },
            ..Config::default()
        }
    }
}

/// One client's conversation with a connection: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The server's settings.
    pub setup: Setup,
    /// What each `read` returns, in order.
    pub reads: Vec<ReadStep>,
    /// What each `write` does, in order.
    pub writes: Vec<WriteStep>,
    /// `shutdown(Write)` fails with this error, if set.
    pub shutdown_fails: Option<ErrorKind>,
    /// How the client ends once its reads or writes run out.
    pub then: Then,
}

/// The errors a step can fail with: the ones that count as a reset, and
/// two that count as another I/O error.
pub(crate) const ERRORS: [ErrorKind; 6] = [
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::BrokenPipe,
    ErrorKind::NotConnected,
    ErrorKind::TimedOut,
    ErrorKind::Other,
];

impl Script {
    /// Decodes fuzzer bytes; every input is a valid script.
    ///
    /// Four header bytes (missing ones read as 0):
    /// 0. framing (`% 3`: burst, line, eof); `/ 3 % 2`: linger;
    ///    `/ 6 % 3`: then (eof, deadline, cut-off); `/ 18`: 1 makes the
    ///    shutdown fail with a reset, 2 with another error;
    /// 1. `max_message`, 0 to 255;
    /// 2. `read_chunk`, `1 + byte % 64`;
    /// 3. `write_chunk`: 0 for none, else `1 + byte % 32`.
    ///
    /// Then one step per byte, its top bits the kind and its low bits the
    /// argument:
    /// - `00nnnnnn`: read the next `n + 1` input bytes;
    /// - `010xxxxx`: read would block; `011xxxxx`: read interrupted;
    /// - `100xxxxx`: end of stream when `x < 16`, else a read error;
    /// - `101nnnnn`: a write that takes at most `n` bytes;
    /// - `110xxxxx`: write would block when `x < 16`, else interrupted;
    /// - `111xxxxx`: a write error.
    pub fn from_bytes(data: &[u8]) -> Script {
        let (header, mut steps) = data.split_at(data.len().min(4));
        let byte = |index: usize| header.get(index).copied().unwrap_or(0);
        let setup = Setup {
            framing: [Framing::Burst, Framing::Line, Framing::Eof][usize::from(byte(0) % 3)],
            linger: byte(0) / 3 % 2 == 1,
            max_message: usize::from(byte(1)),
            read_chunk: 1 + usize::from(byte(2) % 64),
            write_chunk: match byte(3) {
                0 => None,
                n => Some(1 + usize::from(n % 32)),
            },
        };
        let then = [Then::Eof, Then::Deadline, Then::CutOff][usize::from(byte(0) / 6 % 3)];
        let shutdown_fails = match byte(0) / 18 {
            1 => Some(ErrorKind::ConnectionReset),
            2 => Some(ErrorKind::Other),
            _ => None,
        };
        let error = |argument: u8| ERRORS[usize::from(argument) % ERRORS.len()];
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        while let Some((&op, rest)) = steps.split_first() {
            steps = rest;
            let argument = op & 0x1F;
            match op >> 5 {
                0 | 1 => {
                    let (bytes, rest) = steps.split_at(steps.len().min(usize::from(op & 0x3F) + 1));
                    steps = rest;
                    if !bytes.is_empty() {
                        reads.push(ReadStep::Read(bytes.to_vec()));
                    }
                }
                2 => reads.push(ReadStep::WouldBlock),
                3 => reads.push(ReadStep::Interrupted),
                4 if argument < 16 => reads.push(ReadStep::Eof),
                4 => reads.push(ReadStep::Error(error(argument))),
                5 => writes.push(WriteStep::Write(usize::from(argument))),
                6 if argument < 16 => writes.push(WriteStep::WouldBlock),
                6 => writes.push(WriteStep::Interrupted),
                _ => writes.push(WriteStep::Error(error(argument))),
            }
        }
        Script {
            setup,
            reads,
            writes,
            shutdown_fails,
            then,
        }
    }
}
