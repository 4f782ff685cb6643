// cargo run --example minimal [-- [--read-once] [ADDR]]
//
// The smallest correct readiness loop for revecho's protocol, on mio and
// slab alone (not revecho's library): read a message, reply with it
// reversed, close. It is the loop of src/server.rs without any of the
// layers that make revecho safe to leave running: no byte budget per turn,
// no token generations, no deadlines, no lingering close, no limit on
// connections or on message size. docs/walkthrough.md starts here and adds
// those layers one failure at a time.
//
// It is a server, so it needs no other server. ADDR is an `IP:PORT`
// (default 127.0.0.1:7342, revecho's own port, so the same clients work:
// stop revecho first, or pass another address; port 0 picks a free one).
// The first line on stdout is `listening on ADDR`. Then, from another
// terminal:
//
//     printf 'Hello, world!' | nc 127.0.0.1 7342      # prints !dlrow ,olleH
//
// A message is a burst, as in the seed session and revecho's default
// `--framing burst`: whatever has arrived by the time a read returns
// WouldBlock (or end of stream).
//
// `--read-once` breaks the loop on purpose, to show what draining is for.
// mio's readiness is edge-triggered: the kernel reports "readable" once,
// when bytes arrive, not again and again while unread bytes remain (that
// would be level-triggered, like Python's `selectors`). With `--read-once`
// the loop reads once per event, at most READ_SIZE (4) bytes, and prints
// what it read. A read that fills the buffer might have left bytes behind,
// so the loop waits for the next event to read again; a shorter read is
// taken as the end of the burst. Send 14 bytes in one write: one event
// arrives, the loop reads 4, and no further event ever comes, because no
// further bytes arrive. The other 10 bytes sit in the kernel, the client
// waits for its reply, and the server waits for an event: a stall. A
// level-triggered poll would have reported the socket again and the reply
// would have come. Try it:
//
//     cargo run --example minimal -- --read-once
//     printf 'Hello, world!\n' | nc 127.0.0.1 7342     # hangs: Ctrl-C
//     printf 'Hi' | nc 127.0.0.1 7342                  # prints iH: the loop still serves others

use std::io::ErrorKind::{ConnectionAborted, Interrupted, WouldBlock, WriteZero};
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The listener's token; a client's token is its slab key, so the listener
/// takes one no slab will reach.
const LISTENER: Token = Token(usize::MAX);
/// Bytes per `read`: tiny on purpose, so that even `Hello, world!` takes
/// several reads (revecho's `--read-chunk 4` shows the same).
const READ_SIZE: usize = 4;

/// One connection. Its state is `written`: `None` while it reads its
/// message (registered READABLE), then how many bytes of the reply the
/// kernel has taken (registered WRITABLE if a write returned WouldBlock).
struct Client {
    stream: TcpStream,
    /// The message as it arrives; reversed in place once it is complete.
    message: Vec<u8>,
    written: Option<usize>,
}

fn main() {
    // Every error that reaches here ends the server, with one line.
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let mut arguments: Vec<String> = std::env::args().skip(1).collect();
    let read_once = arguments.iter().any(|argument| argument == "--read-once");
    arguments.retain(|argument| argument != "--read-once");
    let address = arguments.pop().unwrap_or_else(|| "127.0.0.1:7342".into());
    let bad_address = |_| io::Error::other(format!("bad address {address:?}"));
    // mio's `bind` makes the listening socket non-blocking, and every
    // stream it accepts too: no call below can block. Only `poll` waits.
    let mut listener = TcpListener::bind(address.parse().map_err(bad_address)?)
        .map_err(|e| io::Error::other(format!("cannot listen on {address}: {e}")))?;
    let mut poll = Poll::new()?;
    // An owned handle on the registry, usable while `poll` is borrowed.
    let registry = poll.registry().try_clone()?;
    registry.register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);

    let mut clients = Slab::new();
    let mut events = Events::with_capacity(128);
    loop {
        // The one place the thread waits: for any socket to become ready.
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == Interrupted => continue,
            result => result?,
        }
        for event in &events {
            let token = event.token();
            if token == LISTENER {
                // Accept until WouldBlock: one event may stand for many
                // queued clients, and edge-triggered readiness will not
                // report the ones left behind.
                loop {
                    let mut stream = match listener.accept() {
                        Ok((stream, _peer)) => stream,
                        Err(e) if e.kind() == WouldBlock => break,
                        // A signal, or a client that gave up while queued.
                        Err(e) if matches!(e.kind(), Interrupted | ConnectionAborted) => continue,
                        // Out of descriptors, say: revecho backs off; this loop gives up.
                        Err(e) => return Err(io::Error::other(format!("accept: {e}"))),
                    };
                    let slot = clients.vacant_entry();
                    // The client speaks first, so the first interest is READABLE.
                    registry.register(&mut stream, Token(slot.key()), Interest::READABLE)?;
                    slot.insert(Client {
                        stream,
                        message: Vec::new(),
                        written: None,
                    });
                }
            } else if let Some(client) = clients.get_mut(token.0) {
                // (An empty slot would mean a client closed earlier in this
                // batch: such an event is skipped. revecho adds generations
                // to tokens so that a reused slot cannot get it either.)
                match serve(client, &registry, token, read_once) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    // A client's error ends that client, never the server.
                    Err(e) => eprintln!("token {}: {e}", token.0),
                }
                // Free the slot and deregister the stream before the next `poll`
                // can report it; dropping the stream then closes it.
                registry.deregister(&mut clients.remove(token.0).stream)?;
            }
        }
    }
}

/// One client's turn: all its socket allows now. The event may be spurious,
/// so nothing here assumes that a call will succeed. Returns whether the
/// reply is out (close the client) or the client must wait for an event.
fn serve(client: &mut Client, registry: &Registry, token: Token, read_once: bool) -> io::Result<bool> {
    let registered_readable = client.written.is_none();
    let mut buffer = [0; READ_SIZE];
    while client.written.is_none() {
        match client.stream.read(&mut buffer) {
            Ok(n) => {
                client.message.extend_from_slice(&buffer[..n]);
                if read_once {
                    // The bug on purpose: after a full read, wait for an
                    // event (which never comes); a short read ends the message.
                    println!("read {n} bytes");
                    if n == READ_SIZE {
                        return Ok(false);
                    }
                }
                // End of stream: the client shut down its side; the
                // message is whatever arrived, possibly nothing.
                if n == 0 || read_once {
                    client.written = Some(0);
                }
            }
            // Nothing yet (the event was spurious): keep waiting.
            Err(e) if e.kind() == WouldBlock && client.message.is_empty() => return Ok(false),
            // Drained: the burst that arrived is the message.
            Err(e) if e.kind() == WouldBlock => client.written = Some(0),
            Err(e) if e.kind() == Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if registered_readable {
        // The seed's `bytes(reversed(data))`. Then write at once, without
        // waiting for an event: the send buffer almost always has room.
        client.message.reverse();
    }
    let written = client.written.get_or_insert(0);
    // Write until the reply is out or the kernel takes no more.
    while *written < client.message.len() {
        match client.stream.write(&client.message[*written..]) {
            Ok(0) => return Err(WriteZero.into()),
            // A partial write is not an error: the rest waits.
            Ok(n) => *written += n,
            // The send buffer is full. Only now ask for WRITABLE, and
            // only if not asked already: each change is a system call.
            Err(e) if e.kind() == WouldBlock => {
                if registered_readable {
                    registry.reregister(&mut client.stream, token, Interest::WRITABLE)?;
                }
                return Ok(false);
            }
            Err(e) if e.kind() == Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
