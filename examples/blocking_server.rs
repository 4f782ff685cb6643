// cargo run --example blocking_server [-- ADDR [CONNECTIONS]]
//
// The server half of the seed session (docs/walkthrough.md, "The seed
// session"), transcribed to blocking std::net calls, one connection at a
// time. The comments carry the seed's step numbers. Set it beside
// examples/minimal.rs, which does the same with no blocking call at all.
//
// It is a server, so it needs no other server. ADDR is an `IP:PORT`
// (default 127.0.0.1:7342, revecho's own port, so the same clients work:
// stop revecho first, or pass another address; port 0 picks a free one).
// With CONNECTIONS it serves that many clients and exits; without, it
// serves until Ctrl-C. The first line on stdout is `listening on ADDR`.
//
//     printf 'Hello, world!' | nc 127.0.0.1 7342      # prints !dlrow ,olleH
//
// What blocking costs: connect with `nc 127.0.0.1 7342` and type nothing.
// The server sits in step 6 (`read`) waiting for that one client, and every
// other client waits in the listen backlog behind it. revecho's loop serves
// them all from one thread, and its timeouts free the slot of a client that
// says nothing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:7342".into());
    let address: SocketAddr = address
        .parse()
        .map_err(|_| io::Error::other(format!("bad address {address:?}: expected IP:PORT")))?;
    let connections: Option<u64> = match args.next() {
        None => None,
        Some(count) => Some(
            count
                .parse()
                .map_err(|_| io::Error::other(format!("bad connection count {count:?}")))?,
        ),
    };

    // Steps 1 and 2: `socket`, `bind`, `listen`. std's `bind` does all
    // three, with a backlog of 128: the kernel completes that many
    // handshakes on its own while this thread is busy elsewhere.
    let server = TcpListener::bind(address)
        .map_err(|error| io::Error::other(format!("cannot listen on {address}: {error}")))?;
    println!("listening on {}", server.local_addr()?);

    let mut served = 0;
    while connections.is_none_or(|count| served < count) {
        // Step 3: `client, address = server.accept()`. Blocks until a
        // client connects (step 4 happens on the client's side).
        let (client, peer) = server.accept()?;
        served += 1;
        // One client's failure ends that client, not the server.
        match serve(client) {
            Ok((received, sent)) => println!("{peer}: received {received} bytes, sent {sent}"),
            Err(error) => eprintln!("{peer}: {error}"),
        }
    }
    Ok(())
}

/// Steps 6 to 8 for one client. Returns the bytes received and sent.
fn serve(mut client: TcpStream) -> io::Result<(usize, usize)> {
    // Step 6: `data = client.recv(1024)`. Blocks until at least one byte
    // has arrived (step 5 is the client's `send`), then returns whatever
    // has arrived, up to 1024 bytes: "a message" is not a TCP concept.
    // 0 bytes means the client shut down its side without sending.
    let mut buffer = [0u8; 1024];
    let received = client.read(&mut buffer)?;
    let data = &buffer[..received];

    // Step 7: `response = bytes(reversed(data))`; `client.send(response)`.
    // Python's `send` returns how many bytes the kernel took, which may be
    // fewer than offered; `write_all` (Python's `sendall`) repeats the call
    // until all are taken, blocking while the send buffer is full.
    let response: Vec<u8> = data.iter().rev().copied().collect();
    client.write_all(&response)?;

    // Step 8: `client.close()`. Dropping the stream closes it. Had the
    // client sent more than the 1024 bytes read above, the unread bytes
    // would make the kernel send a reset instead of a clean end of stream,
    // and the reset could destroy the reply before the client reads it:
    // revecho shuts down its write side and lingers instead.
    drop(client);
    Ok((received, response.len()))
}
