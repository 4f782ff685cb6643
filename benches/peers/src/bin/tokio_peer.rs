//! `cargo run --release -p revecho-peers --bin tokio_peer -- [--framing eof] [--linger]`
//!
//! revecho's protocol on tokio's current-thread runtime: one thread and one
//! epoll set, the same design as revecho, written the way a tokio user would.

#![forbid(unsafe_code)]

use std::io;
use std::process::ExitCode;

use revecho_peers::{Options, listen, reverse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let options = match Options::from_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> io::Result<()> {
    let listener = listen(options.listen)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A failing client ends only its own task.
            let _ = exchange(stream, options).await;
        });
    }
}

async fn exchange(mut stream: TcpStream, options: Options) -> io::Result<()> {
    let mut message = Vec::new();
    let mut saw_eof = false;
    if options.eof_framing {
        stream.read_to_end(&mut message).await?;
        saw_eof = true;
    } else {
        // Burst: wait for the first bytes, then take what else has arrived.
        while message.is_empty() && !saw_eof {
            stream.readable().await?;
            loop {
                match stream.try_read_buf(&mut message) {
                    Ok(0) => {
                        saw_eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    reverse(&mut message);
    stream.write_all(&message).await?;
    if options.linger && !saw_eof {
        stream.shutdown().await?;
        let mut discard = [0; 4096];
        while stream.read(&mut discard).await? > 0 {}
    }
    Ok(())
}
