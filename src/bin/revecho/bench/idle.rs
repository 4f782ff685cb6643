//! `--idle K --hold D`: open K connections that send nothing and hold
//! them, so the server's memory per connection can be read meanwhile.
//!
//! At most `--concurrency` connects are pending at once: a burst of
//! thousands of SYNs would overflow the server's backlog, and a dropped SYN
//! is retried only after a second or more. Once all are open, a line on
//! stderr says so (a script waits for it), and the connections are held
//! for D. A connection the server closes meanwhile counts as an error.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::bench::progress::Progress;
use crate::bench::slot::{ErrorKind, Outcome};
use crate::bench::tally::Tally;

/// What holding idle connections found.
#[derive(Debug)]
pub struct Held {
    /// Connections open through the whole hold.
    pub open: u64,
    /// Connections that could not be opened or were closed by the server.
    pub tally: Tally,
}

enum State {
    Connecting { started: Instant },
    Open,
}

/// Opens `count` idle connections to `address`, then holds them for `hold`.
pub fn run(
    address: SocketAddr,
    count: usize,
    concurrency: usize,
    hold: Duration,
    timeout: Duration,
    progress: &Progress,
) -> io::Result<Held> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut connections: Vec<Option<(TcpStream, State)>> = Vec::with_capacity(count);
    let mut tally = Tally::new().map_err(io::Error::other)?;
    let mut connecting = 0;
    let mut open = 0;
    let mut hold_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Timeouts of pending connects: a linear scan, fine at these counts
        // and outside any measured exchange.
        for entry in connections.iter_mut() {
            if let Some((_, State::Connecting { started })) = entry
                && now.duration_since(*started) >= timeout
            {
                *entry = None;
                connecting -= 1;
                tally.record(Outcome::Failed(ErrorKind::Timeout), timeout);
            }
        }
        while connecting < concurrency && connections.len() < count {
            let token = Token(connections.len());
            let entry = TcpStream::connect(address).and_then(|mut stream| {
                poll.registry()
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match entry {
                Ok(stream) => {
                    connections.push(Some((stream, State::Connecting { started: now })));
                    connecting += 1;
                }
                Err(e) => {
                    connections.push(None);
                    tally.record(Outcome::Failed(ErrorKind::of(&e)), Duration::ZERO);
                }
            }
        }
        if hold_until.is_none() && connections.len() == count && connecting == 0 {
            eprintln!(
                "holding {open} idle connections for {}",
                humantime::format_duration(hold)
            );
            hold_until = Some(now + hold);
        }
        if let Some(until) = hold_until
            && now >= until
        {
            break;
        }
        progress.say(now, || {
            format!("{open} idle connections open, {} errors", tally.error_total())
        });
        let wake = hold_until.unwrap_or(now + timeout.min(Duration::from_millis(250)));
        let wake = progress.next_update().map_or(wake, |redraw| redraw.min(wake));
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            let Some(entry) = connections.get_mut(event.token().0) else {
                continue;
            };
            let Some((stream, state)) = entry else { continue };
            let failure = match state {
                State::Connecting { .. } => match connected(stream) {
                    Ok(false) => continue,
                    Ok(true) => {
                        *state = State::Open;
                        connecting -= 1;
                        open += 1;
                        continue;
                    }
                    Err(kind) => {
                        connecting -= 1;
                        kind
                    }
                },
                // An open idle connection has nothing to read: anything
                // readable is the server closing it.
                State::Open => match stream.read(&mut [0; 64]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        open -= 1;
                        ErrorKind::of(&e)
                    }
                    Ok(_) => {
                        open -= 1;
                        ErrorKind::Other
                    }
                },
            };
            *entry = None;
            tally.record(Outcome::Failed(failure), Duration::ZERO);
        }
    }
    progress.finish();
    Ok(Held { open, tally })
}

/// Whether a non-blocking connect has finished, the way mio documents it:
/// a pending error means it failed, a peer address means it succeeded.
fn connected(stream: &TcpStream) -> Result<bool, ErrorKind> {
    if let Ok(Some(error)) | Err(error) = stream.take_error() {
        return Err(ErrorKind::of(&error));
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(ErrorKind::of(&e)),
    }
}
