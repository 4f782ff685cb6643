// cargo run --example slow_reader [-- ADDR]
//
// Shows partial writes: the server offers more of the reply than the kernel
// will take, `write` returns fewer bytes than offered, the next `write`
// returns WouldBlock, and the rest of the reply waits for a writable event.
//
// On loopback, Linux grows a socket's buffers to several MiB, so a reply
// fits in the kernel and no write is ever short. To see one, the client
// shrinks its receive buffer (SO_RCVBUF) before connecting, which keeps the
// TCP window small, sends a big message in `eof` framing, and is slow to
// read: it first lets the server's send buffer fill up, then takes the reply
// back a few KiB per call. The reply still arrives complete and exact.
//
// The server it needs: one that takes the whole 8 MiB as one message, that
// is `--framing eof` (the message ends when this client half-closes) and a
// `--max-message` above 8 MiB, for example
// `revecho -vv --framing eof --max-message 16MiB`, whose trace log then
// shows every write (docs/walkthrough.md shows such a log). A server in the
// default burst framing replies to whatever part had arrived when its reads
// drained, or refuses the message as too large; the example then fails with
// one line saying which flags it needs. With ADDR it is only the client,
// and it waits a second before reading.
//
// Without ADDR it starts a revecho server in this process with those
// settings, waits for its `partial_writes` counter before reading, and
// prints the counters. To watch the writes of the in-process server:
//   RUST_LOG=revecho=trace cargo run --example slow_reader 2>&1 | grep -E 'write|writable' | head -20

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use revecho::{Config, Framing, Server, Stats};
use socket2::{Domain, Protocol, Socket, Type};

/// Bigger than what the kernel will buffer for one connection, so the
/// server's send buffer must fill up.
const MESSAGE_SIZE: usize = 8 * 1024 * 1024;
/// The client's receive buffer, as asked (Linux doubles it and enforces a minimum).
const CLIENT_RECEIVE_BUFFER: usize = 4 * 1024;
/// Bytes per `read` call on the client side.
const CLIENT_READ_CHUNK: usize = 4 * 1024;
/// What a server must be started with for this client, said in every error.
const SERVER_FLAGS: &str = "the server must run with `--framing eof --max-message 16MiB`";

fn main() -> ExitCode {
    env_logger::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let message: Vec<u8> = (0..MESSAGE_SIZE).map(|i| (i % 251) as u8).collect();
    if let Some(target) = std::env::args().nth(1) {
        let address = resolve(&target)?;
        let (reply, reads) = exchange(address, &message, None)?;
        return report(&message, &reply, reads);
    }

    let config = Config {
        listen: vec!["127.0.0.1:0".into()],
        // The whole message, however long, until the client half-closes.
        framing: Framing::Eof,
        // The default 1 MiB limit would refuse our 8 MiB message.
        max_message: 2 * MESSAGE_SIZE,
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    };
    let mut server = Server::bind(config)?;
    let address = server.local_addrs()[0];
    let stats = server.stats();
    let stop = server.stop_handle();
    let serving = thread::spawn(move || server.run());

    let (reply, reads) = exchange(address, &message, Some(&stats))?;
    stop.stop()?;
    serving
        .join()
        .map_err(|_| io::Error::other("the server thread panicked"))??;
    let outcome = report(&message, &reply, reads);
    let snapshot = stats.snapshot();
    println!(
        "server: bytes_out={} partial_writes={}",
        snapshot.bytes_out, snapshot.partial_writes
    );
    if snapshot.partial_writes == 0 {
        println!("(no write was short this time: the kernel's buffers held the whole reply)");
    }
    outcome
}

/// Sends `message`, half-closes, and reads the reply back slowly. Returns
/// the reply and the number of `read` calls it took. With the server's
/// counters at hand, it starts reading once they show a partial write;
/// without them, after a second.
fn exchange(address: SocketAddr, message: &[u8], stats: Option<&Arc<Stats>>) -> io::Result<(Vec<u8>, u64)> {
    let mut client = connect_with_small_receive_buffer(address)
        .map_err(|error| io::Error::other(format!("cannot connect to {address}: {error}")))?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The server reads while we write, so this completes; then the
    // half-close tells `eof` framing the message ended. A server that
    // refused the message may reset the connection before it is all sent.
    client
        .write_all(message)
        .and_then(|()| client.shutdown(Shutdown::Write))
        .map_err(|error| io::Error::other(format!("sending failed: {error}; {SERVER_FLAGS}")))?;
    wait_before_reading(stats);

    let mut reply = Vec::with_capacity(MESSAGE_SIZE);
    let mut chunk = [0u8; CLIENT_READ_CHUNK];
    let mut reads = 0u64;
    loop {
        let n = client
            .read(&mut chunk)
            .map_err(|error| io::Error::other(format!("reading the reply failed: {error}")))?;
        if n == 0 {
            break;
        }
        reads += 1;
        reply.extend_from_slice(&chunk[..n]);
    }
    Ok((reply, reads))
}

/// Reads nothing for a while, so that the server fills its send buffer.
fn wait_before_reading(stats: Option<&Arc<Stats>>) {
    let Some(stats) = stats else {
        thread::sleep(Duration::from_secs(1));
        return;
    };
    // Bounded: if the kernel held the whole reply, go on after 10 seconds.
    let give_up = Instant::now() + Duration::from_secs(10);
    while stats.snapshot().partial_writes == 0 && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Prints what came back; fails unless it is the exact reversal.
fn report(message: &[u8], reply: &[u8], reads: u64) -> io::Result<()> {
    if !reply.iter().eq(message.iter().rev()) {
        return Err(io::Error::other(format!(
            "the reply ({} bytes) is not the {}-byte message reversed; {SERVER_FLAGS}",
            reply.len(),
            message.len()
        )));
    }
    println!(
        "sent {} bytes; read back {} bytes in {reads} reads",
        message.len(),
        reply.len()
    );
    println!("reply is the exact reversal: true");
    Ok(())
}

/// The first address `target` resolves to.
fn resolve(target: &str) -> io::Result<SocketAddr> {
    let mut addresses = target
        .to_socket_addrs()
        .map_err(|error| io::Error::other(format!("cannot resolve {target:?}: {error}")))?;
    addresses.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolves to no address"),
        )
    })
}

/// SO_RCVBUF must be set before `connect`: the window scale is agreed in
/// the handshake, and std's `TcpStream::connect` offers no hook for it.
fn connect_with_small_receive_buffer(address: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(CLIENT_RECEIVE_BUFFER)?;
    socket.connect(&address.into())?;
    Ok(socket.into())
}
