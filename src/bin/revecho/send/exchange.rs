//! The exchange on the socket: connect, send, half-close, read to the end.
//!
//! A client talking to one server has nothing else to do while it waits, so
//! blocking calls are the honest choice here, each bounded by what is left
//! of one deadline. `--trace` narrates each call the way the seed's REPL
//! showed its return values.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use revecho::describe_error;

use super::count;
use super::verdict::Ending;

/// What came back, and how reading it ended.
pub struct Outcome {
    pub reply: Vec<u8>,
    pub ending: Ending,
}

/// Narrates on stderr when `--trace` is on.
pub struct Narrator(pub bool);

impl Narrator {
    fn say(&self, line: impl FnOnce() -> String) {
        if self.0 {
            eprintln!("{}", line());
        }
    }
}

/// Sends `message`, half-closes if asked, and reads until the server
/// closes, the connection fails or `deadline` passes.
///
/// A failed write or shutdown does not end the exchange: a server that
/// refuses a message may close while we are still writing (broken pipe,
/// not connected, reset), and a line server replies before the rest of a
/// long message is sent. So sending stops there, and what the server did
/// send is read and judged like any reply.
pub fn talk(
    mut stream: TcpStream,
    message: &[u8],
    half_close: bool,
    deadline: Deadline,
    narrate: &Narrator,
) -> Outcome {
    if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
        narrate.say(|| format!("connected to {peer} from {local}"));
    }
    let mut reset_while_sending = false;
    match send_all(&mut stream, message, deadline, narrate) {
        Sent::All if half_close => match stream.shutdown(Shutdown::Write) {
            Ok(()) => narrate.say(|| "shutdown(SHUT_WR): the server will read end of stream".into()),
            Err(e) => {
                narrate.say(|| {
                    format!(
                        "shutdown(SHUT_WR) failed: {}; reading what the server sent",
                        describe_error(&e)
                    )
                });
                reset_while_sending = is_reset(&e);
            }
        },
        Sent::All => {}
        Sent::Stopped(e) => reset_while_sending = is_reset(&e),
        // Whatever reply already arrived is still collected below, without waiting.
        Sent::TimedOut => {}
    }
    let outcome = read_reply(&mut stream, message.len(), deadline, narrate);
    match outcome.ending {
        // A reset reported to a write is not reported again by `recv`,
        // which then sees what arrived before it, and end of stream.
        Ending::Closed if reset_while_sending => Outcome {
            ending: Ending::Reset,
            ..outcome
        },
        _ => outcome,
    }
}

/// How sending ended.
enum Sent {
    All,
    /// A write failed: stop sending and read.
    Stopped(io::Error),
    /// The deadline passed while writing.
    TimedOut,
}

fn send_all(stream: &mut TcpStream, message: &[u8], deadline: Deadline, narrate: &Narrator) -> Sent {
    let mut sent = 0;
    while sent < message.len() {
        let Some(time_left) = deadline.left() else {
            return Sent::TimedOut;
        };
        if let Err(e) = stream.set_write_timeout(time_left) {
            return Sent::Stopped(e);
        }
        let offered = count(message.len() - sent, "byte");
        match stream.write(&message[sent..]) {
            Ok(n) => {
                narrate.say(|| format!("send({offered}) returned {n}"));
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                narrate.say(|| format!("send({offered}) timed out"));
                return Sent::TimedOut;
            }
            Err(e) => {
                narrate.say(|| {
                    format!(
                        "send({offered}) failed: {}; reading what the server sent",
                        describe_error(&e)
                    )
                });
                return Sent::Stopped(e);
            }
        }
    }
    Sent::All
}

/// Reads until end of stream, an error, the deadline, or more bytes than
/// any reversal of a `message_len`-byte message has. Once the deadline has
/// passed, it still takes what has already arrived, without waiting.
fn read_reply(stream: &mut TcpStream, message_len: usize, deadline: Deadline, narrate: &Narrator) -> Outcome {
    let mut reply = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let ending = loop {
        if reply.len() > message_len {
            break Ending::TooLong;
        }
        let waiting = match deadline.left() {
            Some(time_left) => stream.set_read_timeout(time_left),
            None => stream.set_nonblocking(true),
        };
        if let Err(e) = waiting {
            break Ending::Failed(describe_error(&e));
        }
        match stream.read(&mut buffer) {
            Ok(0) => {
                narrate.say(|| "recv() returned 0 bytes: the server closed the connection".into());
                break Ending::Closed;
            }
            Ok(n) => {
                narrate.say(|| format!("recv() returned {}", count(n, "byte")));
                reply.extend_from_slice(&buffer[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                narrate.say(|| "recv() timed out".into());
                break Ending::TimedOut;
            }
            Err(e) if is_reset(&e) => {
                narrate.say(|| format!("recv() failed: {}", describe_error(&e)));
                break Ending::Reset;
            }
            Err(e) => {
                narrate.say(|| format!("recv() failed: {}", describe_error(&e)));
                break Ending::Failed(describe_error(&e));
            }
        }
    };
    Outcome { reply, ending }
}

/// Tries each address the name resolves to, as `TcpStream::connect` does,
/// but within the deadline.
pub fn connect(target: &str, deadline: Deadline) -> Result<TcpStream, String> {
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
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
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

/// Socket timeouts surface as `WouldBlock` on Unix and `TimedOut` elsewhere;
/// after the deadline the socket is non-blocking, and `WouldBlock` means
/// nothing more has arrived.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The ways a connection the server has torn down reports itself: a reset,
/// or, to a write after it, a broken pipe or "not connected".
fn is_reset(error: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected};
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
    )
}

#[cfg(test)]
mod tests {
    //! The failure paths of `talk` on real loopback sockets. The server side
    //! resets (SO_LINGER 0), and the client first waits for that reset with
    //! a `peek`, which also consumes the error it reports: the next write
    //! then fails with a broken pipe and a shutdown with "not connected",
    //! deterministically, as they do when a server refuses a message while
    //! `send` is still sending.

    use std::net::TcpListener;

    use super::*;

    /// How long a blocking call here may take before the test calls it a hang.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A client whose server has reset the connection, after the client
    /// has seen (and consumed) the reset.
    fn client_after_a_reset() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        client.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let (server, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(server);
        let mut probe = [0u8; 1];
        loop {
            match client.peek(&mut probe) {
                Err(e) if is_reset(&e) => return client,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => panic!("peek gave {other:?} instead of a reset"),
            }
        }
    }

    #[test]
    fn a_failed_write_stops_sending_and_the_reply_is_still_read() {
        let client = client_after_a_reset();
        let outcome = talk(
            client,
            b"hello",
            true,
            Deadline::after(PATIENCE),
            &Narrator(false),
        );
        assert_eq!(outcome.reply, b"");
        assert_eq!(
            outcome.ending,
            Ending::Reset,
            "a reset seen by a write is still a reset"
        );
    }

    #[test]
    fn a_failed_shutdown_is_not_the_end_either() {
        // Nothing to write: the shutdown is the first call to fail.
        let client = client_after_a_reset();
        let outcome = talk(client, b"", true, Deadline::after(PATIENCE), &Narrator(false));
        assert_eq!(outcome.reply, b"");
        assert_eq!(outcome.ending, Ending::Reset);
    }
}
