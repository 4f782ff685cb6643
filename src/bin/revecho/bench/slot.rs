//! One client connection at a time: connect, send, read the reply to the
//! end of stream, check it, close.
//!
//! A slot is reused for connection after connection, and so is its receive
//! buffer: in steady state a connection costs the client no allocation.
//! The syscalls are the protocol's own: `connect`, a `write` once the
//! socket is writable (no `getsockopt` to ask whether the connect worked:
//! the write reports a refusal itself), `shutdown` for eof framing, `read`
//! until end of stream, and `close`. The socket is registered once for
//! both directions, edge-triggered, and never re-registered; closing the
//! descriptor removes it from epoll, so there is no deregistration either.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::bench::exchange::Exchange;

/// Why a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server refused the connection (nothing listening).
    Refused,
    /// The connection was reset or the pipe broke under us.
    Reset,
    /// The reply differed from the request reversed, or was too long.
    WrongReply,
    /// Not finished within `--timeout`.
    Timeout,
    /// Anything else (out of ports or descriptors, ...).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::WrongReply,
        ErrorKind::Timeout,
        ErrorKind::Other,
    ];

    /// The kind's name in reports: `errors_{name}` in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::WrongReply => "wrong_reply",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }

    /// Sorts an I/O error into a kind.
    pub fn of(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                ErrorKind::Reset
            }
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        }
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole reply arrived, byte for byte, then the end of stream.
    Completed,
    /// It failed.
    Failed(ErrorKind),
}

/// Where a live connection stands.
#[derive(Debug)]
enum Phase {
    /// Connecting, or writing the request; `sent` bytes are out.
    Sending { sent: usize },
    /// The request is out; `received` bytes of the reply are in.
    Receiving { received: usize },
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    phase: Phase,
    started: Instant,
}

/// A place for one connection at a time, with its reusable receive buffer.
#[derive(Debug)]
pub struct Slot {
    connection: Option<Connection>,
    /// One byte longer than the expected reply, so a longer reply shows up
    /// as a full buffer instead of going unnoticed.
    buffer: Box<[u8]>,
}

impl Slot {
    /// An empty slot for replies of `reply_length` bytes.
    pub fn new(reply_length: usize) -> Slot {
        Slot {
            connection: None,
            buffer: vec![0; reply_length + 1].into_boxed_slice(),
        }
    }

    /// When the connection in this slot started, if there is one.
    pub fn started(&self) -> Option<Instant> {
        self.connection.as_ref().map(|connection| connection.started)
    }

    /// Starts a connection: a non-blocking `connect`, registered for both
    /// directions. The request goes out on the first writable event.
    pub fn start(
        &mut self,
        registry: &Registry,
        token: Token,
        address: SocketAddr,
        started: Instant,
    ) -> Result<(), ErrorKind> {
        let mut stream = TcpStream::connect(address).map_err(|e| ErrorKind::of(&e))?;
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| ErrorKind::of(&e))?;
        self.connection = Some(Connection {
            stream,
            phase: Phase::Sending { sent: 0 },
            started,
        });
        Ok(())
    }

    /// Ends the connection in this slot (closing it) and reports its start.
    pub fn close(&mut self) -> Option<Instant> {
        self.connection.take().map(|connection| connection.started)
    }

    /// Does what `event` makes possible; `Some` when the connection ended,
    /// which then has been closed.
    pub fn on_event(&mut self, event: &Event, exchange: &Exchange) -> Option<(Outcome, Instant)> {
        let connection = self.connection.as_mut()?;
        let outcome = match advance(connection, &mut self.buffer, event, exchange) {
            Ok(None) => return None,
            Ok(Some(outcome)) => outcome,
            Err(kind) => Outcome::Failed(kind),
        };
        self.close().map(|started| (outcome, started))
    }
}

/// Writes while there is something to write and the event says writable,
/// then reads while the event says readable. Reads only on a readable event:
/// a read right after the request would almost always be a wasted
/// `WouldBlock`, and the reply's arrival raises a new edge anyway.
fn advance(
    connection: &mut Connection,
    buffer: &mut [u8],
    event: &Event,
    exchange: &Exchange,
) -> Result<Option<Outcome>, ErrorKind> {
    if let Phase::Sending { sent } = &mut connection.phase {
        if !(event.is_writable() || event.is_error()) {
            return Ok(None);
        }
        while *sent < exchange.request.len() {
            match connection.stream.write(&exchange.request[*sent..]) {
                Ok(0) => return Err(ErrorKind::Other),
                Ok(written) => *sent += written,
                // Still connecting, or the send buffer is full: the next
                // writable edge brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::of(&e)),
            }
        }
        if exchange.half_close {
            connection
                .stream
                .shutdown(Shutdown::Write)
                .map_err(|e| ErrorKind::of(&e))?;
        }
        connection.phase = Phase::Receiving { received: 0 };
    }
    let Phase::Receiving { received } = &mut connection.phase else {
        return Ok(None);
    };
    if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
        return Ok(None);
    }
    loop {
        if *received == buffer.len() {
            // More than the expected reply: wrong, whatever follows.
            return Ok(Some(Outcome::Failed(ErrorKind::WrongReply)));
        }
        match connection.stream.read(&mut buffer[*received..]) {
            Ok(0) => {
                let correct = buffer[..*received] == exchange.reply[..];
                return Ok(Some(if correct {
                    Outcome::Completed
                } else {
                    Outcome::Failed(ErrorKind::WrongReply)
                }));
            }
            Ok(read) => *received += read,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ErrorKind::of(&e)),
        }
    }
}
