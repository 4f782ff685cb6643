//! What a `Script` must lead to, worked out without the connection: a
//! small model that reads the script byte by byte, with no chunks, budgets
//! or buffers, and says which message was framed, how much of its reply
//! the client gets, and why the connection closes.
//!
//! It is written from the rules in the docs (README and the module docs of
//! `connection` and `config`), not from the code, so that the two can
//! disagree: `check` makes them agree.

use std::io::ErrorKind;

use super::script::{ReadStep, Script, Then, WriteStep};
use crate::Framing;
use crate::connection::CloseReason;

/// What the client must see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The reply to the framed message, if a message was framed at all.
    pub reply: Option<Vec<u8>>,
    /// How many bytes of `reply` the client gets.
    pub written: usize,
    /// Why the connection closes.
    pub reason: CloseReason,
}

/// How receiving ended.
enum Received {
    /// A whole message; `peer_finished` when the client's end of stream
    /// ended it.
    Message { message: Vec<u8>, peer_finished: bool },
    /// More than `max_message` bytes without a complete message.
    Refused,
    /// Closed before a message was framed.
    Closed(CloseReason),
}

/// Runs the model over `script`.
pub fn expect(script: &Script) -> Expected {
    let setup = &script.setup;
    let mut reads = script.reads.iter();
    let received = receive(script, &mut reads);
    let (message, peer_finished, refused) = match received {
        Received::Closed(reason) => {
            return Expected {
                reply: None,
                written: 0,
                reason,
            };
        }
        Received::Refused => (None, false, true),
        Received::Message {
            message,
            peer_finished,
        } => (Some(message), peer_finished, false),
    };
    // A refused client counts as oversize however its connection ends,
    // except by the shutdown cut-off.
    let counted = |reason: CloseReason| match reason {
        CloseReason::ShutdownCutOff => reason,
        _ if refused => CloseReason::Oversize,
        _ => reason,
    };
    let reply = message.map(|message| reversed(setup.framing, &message));
    let mut written = 0;
    if let Some(reply) = &reply
        && let Err(reason) = send(script, reply, &mut written)
    {
        return Expected {
            reply: Some(reply.clone()),
            written,
            reason,
        };
    }
    let reason = if let Some(kind) = script.shutdown_fails {
        counted(failure(kind))
    } else if peer_finished || !setup.linger {
        counted(CloseReason::Completed)
    } else {
        counted(linger(script, reads))
    };
    Expected {
        reply,
        written,
        reason,
    }
}

/// Receiving, one byte at a time: a line ends at its first newline, a
/// burst at the first `WouldBlock` after some bytes, any message at end of
/// stream; the first byte past `max_message` without one refuses it.
fn receive<'a>(script: &Script, reads: &mut impl Iterator<Item = &'a ReadStep>) -> Received {
    let setup = &script.setup;
    let mut message = Vec::new();
    loop {
        let ended = |message: Vec<u8>| Received::Message {
            message,
            peer_finished: true,
        };
        match reads.next() {
            // The rest of these bytes, if any, arrive after the message: the
            // connection never reads them as part of it.
            Some(ReadStep::Read(bytes)) => {
                for &byte in bytes {
                    message.push(byte);
                    if setup.framing == Framing::Line && byte == b'\n' {
                        return if message.len() > setup.max_message {
                            Received::Refused
                        } else {
                            Received::Message {
                                message,
                                peer_finished: false,
                            }
                        };
                    }
                    if message.len() > setup.max_message {
                        return Received::Refused;
                    }
                }
            }
            Some(ReadStep::WouldBlock) => {
                if setup.framing == Framing::Burst && !message.is_empty() {
                    return Received::Message {
                        message,
                        peer_finished: false,
                    };
                }
            }
            Some(ReadStep::Interrupted) => {}
            Some(ReadStep::Eof) => return ended(message),
            Some(ReadStep::Error(kind)) => return Received::Closed(failure(*kind)),
            None => {
                return match script.then {
                    Then::Eof => ended(message),
                    // Silence is a read that would block: it ends a burst.
                    Then::Deadline | Then::CutOff
                        if setup.framing == Framing::Burst && !message.is_empty() =>
                    {
                        Received::Message {
                            message,
                            peer_finished: false,
                        }
                    }
                    // The read timeout counts from accept, so it is the
                    // one that has passed when the idle timeout has too.
                    Then::Deadline => Received::Closed(CloseReason::ReadTimeout),
                    Then::CutOff => Received::Closed(CloseReason::ShutdownCutOff),
                };
            }
        }
    }
}

/// The reply: the bytes reversed, a line's `\n` or `\r\n` kept at the end.
fn reversed(framing: Framing, message: &[u8]) -> Vec<u8> {
    let (content, terminator) = match framing {
        Framing::Line if message.ends_with(b"\r\n") => message.split_at(message.len() - 2),
        Framing::Line if message.ends_with(b"\n") => message.split_at(message.len() - 1),
        _ => (message, &[][..]),
    };
    content.iter().rev().chain(terminator).copied().collect()
}

/// Sending: each write is offered at most `write_chunk` bytes and takes
/// what its step allows. `Err` is the close before the reply was written in
/// full.
fn send(script: &Script, reply: &[u8], written: &mut usize) -> Result<(), CloseReason> {
    let chunk = script.setup.write_chunk.unwrap_or(usize::MAX);
    let mut writes = script.writes.iter();
    while *written < reply.len() {
        let offered = (reply.len() - *written).min(chunk);
        match writes.next() {
            // A write that takes nothing is an error, not a retry.
            Some(WriteStep::Write(0)) => return Err(CloseReason::IoError),
            Some(WriteStep::Write(n)) => *written += offered.min(*n),
            Some(WriteStep::WouldBlock | WriteStep::Interrupted) => {}
            Some(WriteStep::Error(kind)) => return Err(failure(*kind)),
            None => match script.then {
                Then::Eof => *written = reply.len(),
                Then::Deadline => return Err(CloseReason::IdleTimeout),
                Then::CutOff => return Err(CloseReason::ShutdownCutOff),
            },
        }
    }
    Ok(())
}

/// Lingering: whatever still arrives is thrown away until the client's end
/// of stream, an error, or the linger deadline.
fn linger<'a>(script: &Script, reads: impl Iterator<Item = &'a ReadStep>) -> CloseReason {
    for step in reads {
        match step {
            ReadStep::Eof => return CloseReason::Completed,
            ReadStep::Error(kind) => return failure(*kind),
            ReadStep::Read(_) | ReadStep::WouldBlock | ReadStep::Interrupted => {}
        }
    }
    match script.then {
        Then::Eof => CloseReason::Completed,
        Then::Deadline => CloseReason::LingerTimeout,
        Then::CutOff => CloseReason::ShutdownCutOff,
    }
}

/// How a failed call counts: the peer's reset (or a pipe it broke) is a
/// reset, anything else an I/O error.
fn failure(kind: ErrorKind) -> CloseReason {
    match kind {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::NotConnected => CloseReason::Reset,
        _ => CloseReason::IoError,
    }
}
