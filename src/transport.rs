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

use std::io::{self, Read, Write};
use std::net::Shutdown;

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
