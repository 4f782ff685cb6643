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
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The listener's token; a client's token is its slab key, so the listener
/// takes one no slab will reach.
const LISTENER: Token = Token(usize::MAX);
/// Bytes per `read`: tiny on purpose, so that even `Hello, world!` takes
/// several reads (revecho's `--read-chunk 4` shows the same).
const READ_SIZE: usize = 4;

struct Client {
    stream: TcpStream,
    /// The message as it arrives; reversed in place once it is complete.
    message: Vec<u8>,
    state: State,
}

enum State {
    /// Registered READABLE, waiting for the rest of the message.
    Reading,
    /// Replying: this many bytes of the reply are in the kernel already.
    Writing(usize),
}

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let read_once = std::env::args().any(|argument| argument == "--read-once");
    let address = std::env::args()
        .skip(1)
        .find(|argument| argument != "--read-once");
    let address = address.as_deref().unwrap_or("127.0.0.1:7342");
    let address: SocketAddr = address
        .parse()
        .map_err(|_| io::Error::other(format!("bad address {address:?}")))?;
    // mio's `bind` makes the listening socket non-blocking, and every
    // stream it accepts too: no call below can block. Only `poll` waits.
    let mut listener = TcpListener::bind(address)
        .map_err(|e| io::Error::other(format!("cannot listen on {address}: {e}")))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
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
            if event.token() == LISTENER {
                accept_all(&listener, poll.registry(), &mut clients)?;
                continue;
            }
            // An event for an empty slot belongs to a client closed
            // earlier in this batch: drop it. (revecho adds a generation
            // to each token, so that a *reused* slot cannot get it either.)
            let Some(client) = clients.get_mut(event.token().0) else {
                continue;
            };
            match serve(client, poll.registry(), event.token(), read_once) {
                Ok(true) => continue,
                Ok(false) => {}
                // A client's error ends that client, never the server.
                Err(e) => eprintln!("token {}: {e}", event.token().0),
            }
            // Deregister, then free the slot; dropping the stream closes it.
            let mut client = clients.remove(event.token().0);
            poll.registry().deregister(&mut client.stream)?;
        }
    }
}

/// Accepts until WouldBlock: one event may stand for many queued clients,
/// and edge-triggered readiness will not report the ones left behind.
fn accept_all(listener: &TcpListener, registry: &Registry, clients: &mut Slab<Client>) -> io::Result<()> {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(e) if e.kind() == WouldBlock => return Ok(()),
            // A signal, or a client that gave up while queued: go on.
            Err(e) if matches!(e.kind(), Interrupted | ConnectionAborted) => continue,
            // Out of descriptors, say: revecho backs off; this loop gives up.
            Err(e) => return Err(e),
        };
        let slot = clients.vacant_entry();
        // The client speaks first, so the first interest is READABLE.
        registry.register(&mut stream, Token(slot.key()), Interest::READABLE)?;
        slot.insert(Client {
            stream,
            message: Vec::new(),
            state: State::Reading,
        });
    }
}

/// Does all the client's socket allows now. `Ok(true)`: wait for its next
/// event; `Ok(false)`: the reply is out, close it. The event may be
/// spurious, so nothing here assumes that a call will succeed.
fn serve(client: &mut Client, registry: &Registry, token: Token, read_once: bool) -> io::Result<bool> {
    let registered_readable = matches!(client.state, State::Reading);
    if registered_readable {
        if !read_message(client, read_once)? {
            return Ok(true);
        }
        // The seed's `bytes(reversed(data))`. Then write at once, without
        // waiting for an event: the send buffer almost always has room.
        client.message.reverse();
        client.state = State::Writing(0);
    }
    let State::Writing(written) = &mut client.state else {
        return Ok(true);
    };
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
                return Ok(true);
            }
            Err(e) if e.kind() == Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Reads until WouldBlock or end of stream (or once, with `--read-once`).
/// Returns whether the message is complete.
fn read_message(client: &mut Client, read_once: bool) -> io::Result<bool> {
    let mut buffer = [0; READ_SIZE];
    loop {
        match client.stream.read(&mut buffer) {
            // End of stream: the client shut down its side; the message is
            // whatever arrived, possibly nothing.
            Ok(0) => return Ok(true),
            Ok(n) if read_once => {
                client.message.extend_from_slice(&buffer[..n]);
                println!("read {n} bytes");
                return Ok(n < READ_SIZE);
            }
            Ok(n) => client.message.extend_from_slice(&buffer[..n]),
            // Nothing yet (the event was spurious): keep waiting.
            Err(e) if e.kind() == WouldBlock && client.message.is_empty() => return Ok(false),
            // Drained: the burst that arrived is the message.
            Err(e) if e.kind() == WouldBlock => return Ok(true),
            Err(e) if e.kind() == Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
