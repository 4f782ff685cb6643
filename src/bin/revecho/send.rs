//! `revecho send`: the client half of the seed session, with blocking calls.
//!
//! A client talking to one server has nothing else to do while it waits, so
//! blocking calls are the honest choice here. `--trace` narrates each call
//! the way the seed's REPL showed its return values.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use revecho::describe_error;

use crate::cli::SendArgs;

/// Runs the client; prints the reply raw on stdout.
pub fn run(args: SendArgs) -> ExitCode {
    match exchange(args) {
        Ok(reply) => {
            let mut stdout = io::stdout().lock();
            match stdout.write_all(&reply).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("cannot write the reply: {}", describe_error(&e))),
            }
        }
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Narrates on stderr when `--trace` is on.
struct Narrator(bool);

impl Narrator {
    fn say(&self, line: impl FnOnce() -> String) {
        if self.0 {
            eprintln!("{}", line());
        }
    }
}

fn exchange(args: SendArgs) -> Result<Vec<u8>, String> {
    let deadline = Deadline::after(args.timeout);
    let narrate = Narrator(args.trace);
    let message = match args.message {
        Some(message) => message.into_vec(),
        None => {
            let mut message = Vec::new();
            io::stdin()
                .read_to_end(&mut message)
                .map_err(|e| format!("cannot read standard input: {}", describe_error(&e)))?;
            message
        }
    };
    let mut stream = connect(&args.connect, deadline)?;
    if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
        narrate.say(|| format!("connected to {peer} from {local}"));
    }
    let timed_out = || {
        format!(
            "no complete reply from {} within {}",
            args.connect,
            humantime::format_duration(args.timeout)
        )
    };

    let mut sent = 0;
    while sent < message.len() {
        stream
            .set_write_timeout(deadline.left().ok_or_else(timed_out)?)
            .map_err(|e| describe_error(&e))?;
        match stream.write(&message[sent..]) {
            Ok(n) => {
                narrate.say(|| format!("send({} bytes) returned {n}", message.len() - sent));
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(format!("send failed: {}", describe_error(&e))),
        }
    }
    if args.half_close {
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown failed: {}", describe_error(&e)))?;
        narrate.say(|| "shutdown(SHUT_WR): the server will read end of stream".into());
    }

    let mut reply = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        stream
            .set_read_timeout(deadline.left().ok_or_else(timed_out)?)
            .map_err(|e| describe_error(&e))?;
        match stream.read(&mut buffer) {
            Ok(0) => {
                narrate.say(|| "recv() returned 0 bytes: the server closed the connection".into());
                return Ok(reply);
            }
            Ok(n) => {
                narrate.say(|| format!("recv() returned {n} bytes"));
                reply.extend_from_slice(&buffer[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(format!("recv failed: {}", describe_error(&e))),
        }
    }
}

/// Tries each address the name resolves to, as `TcpStream::connect` does,
/// but within the deadline.
fn connect(target: &str, deadline: Deadline) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {}", describe_error(&e)))?
        .collect();
    let mut last_error = None;
    for address in addresses {
        let attempt = match deadline.left() {
            None => break,
            Some(None) => TcpStream::connect(address),
            Some(Some(time_left)) => TcpStream::connect_timeout(&address, time_left),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    let reason = last_error.map_or_else(|| "timed out".to_string(), |e| describe_error(&e));
    Err(format!("cannot connect to {target}: {reason}"))
}

/// When the whole exchange must be over; `--timeout 0` sets none, like the
/// server's zero timeouts.
#[derive(Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline((!timeout.is_zero()).then(|| Instant::now() + timeout))
    }

    /// The timeout for the next blocking call: `Some(None)` is no limit,
    /// `None` means the deadline has passed.
    fn left(self) -> Option<Option<Duration>> {
        match self.0 {
            None => Some(None),
            Some(deadline) => deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .map(Some),
        }
    }
}

/// Socket timeouts surface as `WouldBlock` on Unix and `TimedOut` elsewhere.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
