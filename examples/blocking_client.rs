// cargo run --example seed_client [-- ADDR [MESSAGE]]
//
// The client half of the seed session (docs/walkthrough.md), in Rust with
// blocking std calls, printing each call and its return value the way the
// Python REPL did:
//
//     >>> client.send(b'Hello, world!')
//     13
//
// With ADDR (for example `localhost:7342`, where `cargo run --release`
// listens) it talks to that server. Without it, it starts a revecho server
// in this process on a free port, with the default settings (burst framing,
// the seed's behaviour).
//
// Blocking calls are the honest choice for a client: it talks to one server
// and has nothing else to do while it waits. The server is the side that
// cannot afford to block.

use std::env;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use revecho::{Config, Server, StopHandle};

fn main() -> io::Result<()> {
    env_logger::init();
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
    let mut client = TcpStream::connect(address)?;
    // A hung server should not hang the example.
    client.set_read_timeout(Some(Duration::from_secs(10)))?;

    println!(">>> client.send({})", python_bytes(message.as_bytes()));
    // One `write`, like Python's `send`: it returns how many bytes the
    // kernel took, which for a short message is all of them.
    let sent = client.write(message.as_bytes())?;
    println!("{sent}");

    // Steps 9 and 10: `recv` until it returns b'', the sign that the server
    // closed its side. Each call returns whatever has arrived, up to 1024
    // bytes, so a reply written in pieces may take several calls.
    let mut buffer = [0u8; 1024];
    loop {
        println!(">>> client.recv(1024)");
        let n = client.read(&mut buffer)?;
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
    target.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolves to no address"),
        )
    })
}

fn stop_server(stop: StopHandle, serving: thread::JoinHandle<io::Result<revecho::Exit>>) -> io::Result<()> {
    stop.stop()?;
    serving.join().expect("the server thread panicked")?;
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
