//! `Transport`: the three socket calls a connection makes, and nothing else.
//!
//! A [`Connection`](crate::connection::Connection) never touches a socket
//! type directly. It drives this trait, which `mio::net::TcpStream`
//! implements for real and a scripted fake implements in the unit tests, so
//! the tests can make `WouldBlock`, `Interrupted`, a short write or a reset
//! happen at an exact point.
//!
//! Why not `Read + Write`? Because the lingering close needs
//! `shutdown(Write)`: send our FIN so the client sees end of stream right
//! after the reply, while we keep reading what it still sends.
//!
//! The other way to close, with a reset, is not a call the connection
//! makes: it happens when the socket is dropped. The connection records in
//! its `Closed` state that it wants it, and the loop calls
//! [`reset_on_close`] right before it drops the socket.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// A non-blocking byte stream, as a connection sees it.
///
/// `read` and `write` behave like the non-blocking socket calls: they return
/// `ErrorKind::WouldBlock` when the kernel has nothing to give or no room to
/// take, `Ok(0)` from `read` means end of stream, and either may move fewer
/// bytes than asked.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` is end of stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes from `buf`, possibly only a prefix of it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Shuts down the write half: the peer reads end of stream once it has
    /// read everything written before.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Makes the coming close of `stream` abortive: with SO_LINGER set to 0,
/// `close` discards whatever is still unsent and sends a reset (RST)
/// instead of a FIN. For a reply cut off part-way (an idle timeout or the
/// shutdown cut-off while sending): after a FIN the client would read end
/// of stream and could take the partial reply for the whole one; a reset
/// makes its next read fail with "connection reset" instead. nginx does the
/// same with `reset_timedout_connection`.
pub(crate) fn reset_on_close(stream: &mio::net::TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))
}
