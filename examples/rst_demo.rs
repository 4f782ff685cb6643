// cargo run --example rst_demo [-- ADDR]
//
// Shows the reset (RST) that lingering prevents. A client sends a long
// line, starts to get the reply, and sends a few more bytes, as a client
// with a second message would. What happens to the rest of the reply
// depends on the server:
//
// - With lingering (the default `--linger 2s`) the server sends its FIN
//   after the reply, then reads and throws away what the client still
//   sends. The client gets the whole reply, then end of stream.
// - With `--linger 0` the server closes right after its `shutdown(Write)`,
//   with the extra bytes still unread in its kernel. Closing a socket with
//   unread data makes the kernel send a reset instead of a FIN, and throw
//   away the part of the reply it had not sent yet. The client gets part of
//   the reply, then "connection reset by peer".
//
// Two sizes make the outcome certain rather than a race:
//
// - The reply is larger than the client's receive buffer. A reset does not
//   destroy bytes that already arrived there, which is why a 13-byte reply
//   on loopback survives it. The client shrinks its buffer (SO_RCVBUF)
//   before connecting.
// - The reply is larger than the server's send buffer too (Linux allows at
//   most 4 MiB by default), so the server is still writing, and not
//   reading, when the extra bytes arrive: they are certainly unread when it
//   closes. A socket the server has already closed may stop accepting
//   data, and the extra bytes would then never arrive at all.
//
// So the line is 8 MiB, and the server needs a larger `--max-message`:
// `revecho -v --framing line --max-message 16MiB --linger 0` (or without
// `--linger 0`). Without ADDR the example starts both servers itself, in
// this process, and runs the client against each.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use revecho::{Config, Framing, Server};
use socket2::{Domain, Protocol, Socket, Type};

/// The line's content; the reply is this many bytes plus the `\n`.
const LINE_SIZE: usize = 8 * 1024 * 1024;
/// The client's receive buffer, as asked (Linux doubles it).
const CLIENT_RECEIVE_BUFFER: usize = 4 * 1024;
/// What the client sends once the reply has begun.
const MORE: &[u8] = b"more\n";

fn main() {
    if let Err(e) = run() {
        eprintln!("rst_demo: {}", revecho::describe_error(&e));
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    if let Some(target) = std::env::args().nth(1) {
        println!("{}", exchange(resolve(&target)?)?);
        return Ok(());
    }
    for linger in [Duration::ZERO, Duration::from_secs(2)] {
        let config = Config {
            listen: vec!["127.0.0.1:0".into()],
            framing: Framing::Line,
            max_message: 2 * LINE_SIZE,
            linger,
            ..Config::default()
        };
        let mut server = Server::bind(config)?;
        let address = server.local_addrs()[0];
        let stop = server.stop_handle();
        let serving = thread::spawn(move || server.run());
        let outcome = exchange(address)?;
        let linger = if linger.is_zero() { "0" } else { "2s" };
        println!("--linger {linger}: {outcome}");
        stop.stop()?;
        match serving.join() {
            Ok(result) => result.map(drop)?,
            Err(_) => return Err(io::Error::other("the server thread panicked")),
        }
    }
    Ok(())
}

/// Sends the line, reads the first bytes of the reply, sends `MORE`, then
/// reads on until end of stream or an error. Says what arrived.
fn exchange(address: SocketAddr) -> io::Result<String> {
    let mut client = connect_with_small_receive_buffer(address)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = vec![b'x'; LINE_SIZE];
    line.push(b'\n');
    // The server reads while we write (it serves everyone from one thread,
    // but it is not waiting for us), so this completes.
    client.write_all(&line)?;

    // The first bytes of the reply: the server has the whole line and is
    // writing. Only now send more, so the extra bytes cannot be part of
    // the message.
    let mut reply = vec![0u8; 4096];
    let first = client.read(&mut reply)?;
    reply.truncate(first);
    client.write_all(MORE)?;

    let mut chunk = [0u8; 4096];
    let ending = loop {
        match client.read(&mut chunk) {
            Ok(0) => break "then end of stream".to_string(),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("then: {}", revecho::describe_error(&e)),
        }
    };
    Ok(format!(
        "read {} of {} reply bytes, {ending}",
        reply.len(),
        LINE_SIZE + 1
    ))
}

/// The first address `target` resolves to.
fn resolve(target: &str) -> io::Result<SocketAddr> {
    target.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolves to no address"),
        )
    })
}

/// SO_RCVBUF must be set before `connect`: the window scale is agreed in
/// the handshake.
fn connect_with_small_receive_buffer(address: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(CLIENT_RECEIVE_BUFFER)?;
    socket.connect(&address.into())?;
    Ok(socket.into())
}
