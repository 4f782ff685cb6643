//! What the Rust peers share: their command line and their listener.
//!
//! Every peer speaks revecho's protocol: read a message (burst framing: what
//! has arrived when the socket is drained; eof framing: everything up to the
//! client's end of stream), reply with it reversed, and close, either at
//! once or, with `--linger`, the way revecho does by default: shut down the
//! write side, read and discard until the client's end of stream, close.

#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// The backlog every peer listens with, like revecho's default: mio's 128
/// overflows under bursts, and a dropped SYN costs a 1 s retry.
pub const BACKLOG: i32 = 1024;

/// A peer's options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Eof framing rather than burst.
    pub eof_framing: bool,
    /// The lingering close rather than a plain one.
    pub linger: bool,
}

impl Options {
    /// Parses `[--listen ADDR] [--framing burst|eof] [--linger]`.
    pub fn from_args() -> Result<Options, String> {
        let mut options = Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            eof_framing: false,
            linger: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--listen" => {
                    let value = args.next().ok_or("--listen needs an address")?;
                    options.listen = value.parse().map_err(|e| format!("--listen {value}: {e}"))?;
                }
                "--framing" => match args.next().as_deref() {
                    Some("burst") => options.eof_framing = false,
                    Some("eof") => options.eof_framing = true,
                    _ => return Err("--framing takes burst or eof".into()),
                },
                "--linger" => options.linger = true,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(options)
    }
}

/// A listening socket with [`BACKLOG`], announced on stdout as revecho does.
pub fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    let listener: TcpListener = socket.into();
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// The reply to `message`: reversed in place.
pub fn reverse(message: &mut [u8]) {
    message.reverse();
}
