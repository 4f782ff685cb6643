// cargo run --example blocking_client [-- ADDR [MESSAGE]]
//
// The client half of the seed session (docs/walkthrough.md, "The seed
// session"), in Rust with blocking std calls, printing each call and its
// return value the way the Python REPL did:
//
//     >>> client.send(b'Hello, world!')
//     13
//
// The server it needs: any revecho in its default `--framing burst` (the
// seed's "whatever has arrived"), for example `cargo run --release`, which
// listens on localhost:7342; examples/minimal.rs and
// examples/blocking_server.rs serve it too. In `--framing line` or `eof`
// the message is never complete (it has no `\n`, and this client does not
// half-close), so the client gives up after 10 seconds. Without ADDR it
// starts a revecho server in this process on a free port, with the default
// settings.
//
// Blocking calls are the honest choice for a client: it talks to one server
// and has nothing else to do while it waits. The server is the side that
// cannot afford to block. Set this beside examples/blocking_server.rs.

use std::env;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use revecho::{Config, Server, StopHandle};

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
    let mut args = env::args().skip(1);
    let target = args.next();
    let message = args.next().unwrap_or_else(|| "Hello, world!".into());

    // Either the server named on the command line or one of our own.
    let (address, own_server) = match target {
        Some(target) => (resolve(&target)?, None),
        None => {
            let config = Config {
                listen: vec!["127.0.0.1:0".into()],
                ..Config::default()
            };
            let mut server = Server::bind(config)?;
            let address = server.local_addrs()[0];
            let stop = server.stop_handle();
            let serving = thread::spawn(move || server.run());
            println!("# a revecho server in this process, listening on {address}");
            (address, Some((stop, serving)))
        }
    };

    // Steps 4 and 5 of the seed: connect, then send.
    println!(
        ">>> client = socket.socket(AF_INET, SOCK_STREAM); client.connect(({:?}, {}))",
        address.ip().to_string(),
        address.port()
    );
    let mut client = TcpStream::connect(address)
        .map_err(|error| io::Error::other(format!("cannot connect to {address}: {error}")))?;
    // A hung server should not hang the example.
    client.set_read_timeout(Some(Duration::from_secs(10)))?;

    println!(">>> client.send({})", python_bytes(message.as_bytes()));
    // One `write`, like Python's `send`: it returns how many bytes the
    // kernel took, which for a short message is all of them.
    let sent = client
        .write(message.as_bytes())
        .map_err(|error| io::Error::other(format!("send failed: {error}")))?;
    println!("{sent}");

    // Steps 9 and 10: `recv` until it returns b'', the sign that the server
    // closed its side. Each call returns whatever has arrived, up to 1024
    // bytes, so a reply written in pieces may take several calls.
    let mut buffer = [0u8; 1024];
    loop {
        println!(">>> client.recv(1024)");
        let n = client.read(&mut buffer).map_err(|error| match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                io::Error::other("no reply within 10 seconds: is the server in burst framing?")
            }
            _ => io::Error::other(format!("recv failed: {error}")),
        })?;
        println!("{}", python_bytes(&buffer[..n]));
        if n == 0 {
            break;
        }
    }

    // Step 11.
    println!(">>> client.close()");
    drop(client);

    if let Some((stop, serving)) = own_server {
        stop_server(stop, serving)?;
    }
    Ok(())
}

/// The first address `target` resolves to, as `socket.connect` would try.
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

fn stop_server(stop: StopHandle, serving: thread::JoinHandle<io::Result<revecho::Exit>>) -> io::Result<()> {
    stop.stop()?;
    serving
        .join()
        .map_err(|_| io::Error::other("the server thread panicked"))??;
    Ok(())
}

/// Bytes the way Python's REPL shows them: `b'!dlrow ,olleH'`, or in double
/// quotes when the bytes hold a single quote and no double quote.
fn python_bytes(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut text = format!("b{quote}");
    for &byte in bytes {
        match byte {
            b'\\' => text.push_str("\\\\"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            b'\t' => text.push_str("\\t"),
            _ if byte == quote as u8 => {
                text.push('\\');
                text.push(quote);
            }
            0x20..=0x7e => text.push(byte as char),
            _ => text.push_str(&format!("\\x{byte:02x}")),
        }
    }
    text.push(quote);
    text
}
