//! `cargo run --release -p revecho-peers --bin threads_peer -- [--framing eof] [--linger]`
//!
//! revecho's protocol the seed session's way: blocking calls, one thread per
//! connection. Burst framing is the seed's single `recv`: whatever one read
//! returns once bytes have arrived.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::thread;

use revecho_peers::{Options, listen, reverse};

fn main() -> ExitCode {
    let options = match Options::from_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let listener = match listen(options.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for stream in listener.incoming() {
        // An accept failure (out of descriptors) skips that client.
        let Ok(stream) = stream else { continue };
        // Small stacks: the exchange needs little, and 10,000 idle
        // connections mean 10,000 threads.
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let _ = exchange(stream, options);
        });
        if let Err(e) = spawned {
            eprintln!("cannot start a thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

fn exchange(mut stream: TcpStream, options: Options) -> io::Result<()> {
    let mut message = Vec::new();
    let saw_eof = if options.eof_framing {
        stream.read_to_end(&mut message)?;
        true
    } else {
        message.resize(16 * 1024, 0);
        let read = stream.read(&mut message)?;
        message.truncate(read);
        read == 0
    };
    reverse(&mut message);
    stream.write_all(&message)?;
    if options.linger && !saw_eof {
        stream.shutdown(Shutdown::Write)?;
        let mut discard = [0; 4096];
        while stream.read(&mut discard)? > 0 {}
    }
    Ok(())
}
