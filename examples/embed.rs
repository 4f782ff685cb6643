// cargo run --example embed [-- ADDR]
//
// Runs a revecho server inside this process: bind it on a free port, serve
// it on its own thread, do one exchange with a plain blocking client, read
// the counters, then stop it through its stop handle (the same graceful
// path as SIGTERM). This is how the integration tests use the library.
//
// It needs no other server: it is one. ADDR is where the embedded server
// listens (`host:port`, default 127.0.0.1:0, a free port).
//
// To watch the loop while it runs: RUST_LOG=revecho=trace cargo run --example embed

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use revecho::{Config, Exit, Framing, Server};

fn main() -> ExitCode {
    // Silent unless RUST_LOG asks for more; the library itself only emits
    // `log` records and leaves the choice of logger to its embedder.
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
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());

    // Port 0: the kernel picks a free port, and `local_addrs` says which.
    // Short timeouts, because an example should not hold a slot for 30s.
    let config = Config {
        listen: vec![listen],
        framing: Framing::Line,
        idle_timeout: Some(Duration::from_secs(5)),
        linger: Duration::from_secs(1),
        ..Config::default()
    };
    let mut server = Server::bind(config)?;
    let address = server.local_addrs()[0];
    let stats = server.stats();
    let stop = server.stop_handle();
    // `run` blocks until the server is stopped, so it gets its own thread.
    let serving = thread::spawn(move || server.run());
    println!("server listening on {address}");

    // The client side of the seed session, with blocking calls.
    let mut client = TcpStream::connect(address)?;
    client.write_all(b"Hello, world!\n")?;
    let mut reply = Vec::new();
    // Reads until end of stream: the server shuts down its write side right
    // after the reply.
    client.read_to_end(&mut reply)?;
    println!(
        "sent b\"Hello, world!\\n\", got back {:?}",
        String::from_utf8_lossy(&reply)
    );
    // The counters are atomics, readable while the server runs. The reply
    // was counted before the server sent its end of stream, so it is
    // already here.
    let during = stats.snapshot();
    println!(
        "while running: accepted={} replies={} bytes_in={} bytes_out={}",
        during.accepted, during.replies_completed, during.bytes_in, during.bytes_out
    );
    // Closing our end lets the server's lingering close finish at once.
    drop(client);

    // Graceful: the loop stops accepting, lets connections in flight finish
    // (within `shutdown_grace`), then `run` returns.
    stop.stop()?;
    let exit = serving
        .join()
        .map_err(|_| io::Error::other("the server thread panicked"))??;
    if exit != Exit::Finished {
        return Err(io::Error::other(format!("the server ended with {exit:?}")));
    }
    println!("stopped: {exit:?}");
    println!("summary: {}", stats.snapshot());
    Ok(())
}
