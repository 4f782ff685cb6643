//! `Client`: one accepted connection as the loop holds it, and the only
//! code that changes its registration with the poll.
//!
//! Interest follows state: a new client is registered READABLE (it speaks
//! first), the interest changes only when the connection's state asks for
//! a different one (a system call saved otherwise), and the stream leaves
//! the poll, by being closed, before its slab slot can be reused.

use std::io;

use log::{debug, trace};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::per_ip::Charge;
use crate::connection::Connection;
use crate::observer::{self, Observer};
use crate::transport;

/// One client: its state machine, its socket, and what the loop registered
/// and scheduled for it (kept so that changes can be detected).
#[derive(Debug)]
pub(super) struct Client {
    pub(super) connection: Connection,
    stream: TcpStream,
    /// Slab key plus generation: see [`crate::token`].
    pub(super) token: Token,
    /// The interest currently registered with the poll.
    interest: Interest,
    /// Out of budget last turn and queued in `Server::yielded`.
    pub(super) yielded: bool,
    /// What this connection counts against `max_connections_per_ip`, if
    /// anything: its peer from accept, or with `--proxy-protocol` the
    /// client from its PROXY header once that has arrived.
    pub(super) charge: Option<Charge>,
}

impl Client {
    /// Registers a freshly accepted stream READABLE: the client speaks
    /// first. An edge-triggered registration still reports data that arrived
    /// before it. On error the stream is handed back dropped (closed).
    pub(super) fn register(
        registry: &Registry,
        mut stream: TcpStream,
        token: Token,
        connection: Connection,
        observer: Option<&dyn Observer>,
    ) -> io::Result<Client> {
        registry.register(&mut stream, token, Interest::READABLE)?;
        debug!(
            "{}: registered READABLE: waiting for the message",
            connection.name()
        );
        report_interest(observer, &connection, None, Some(Interest::READABLE));
        Ok(Client {
            connection,
            stream,
            token,
            interest: Interest::READABLE,
            yielded: false,
            charge: None,
        })
    }

    /// Brings the registered interest in line with `interest`; a system call
    /// only when it changed.
    pub(super) fn reregister(
        &mut self,
        registry: &Registry,
        interest: Interest,
        observer: Option<&dyn Observer>,
    ) -> io::Result<()> {
        if interest != self.interest {
            registry.reregister(&mut self.stream, self.token, interest)?;
            // Only two changes happen: into Sending with part of the reply
            // unwritten, and out of it into Lingering.
            let waiting_for = if interest.is_writable() {
                "room in the send buffer for the rest of the reply"
            } else {
                "the client's bytes or its close"
            };
            debug!(
                "{}: interest {} => {}: waiting for {waiting_for}",
                self.connection.name(),
                interest_name(self.interest),
                interest_name(interest)
            );
            report_interest(observer, &self.connection, Some(self.interest), Some(interest));
            self.interest = interest;
        }
        Ok(())
    }

    /// Takes the stream out of the poll's interest: by closing it, which
    /// [`close`](Client::close) does next, not with an `epoll_ctl(DEL)` of
    /// its own. That saves one system call of the nine or ten a short
    /// exchange costs (measured in docs/benchmarks.md), and it is safe:
    ///
    /// - epoll forgets a descriptor when its last reference is closed. The
    ///   stream is ours alone: accepted with `SOCK_CLOEXEC`, never
    ///   duplicated, so a child that execs holds no copy either.
    /// - Should a copy survive anyway (an embedder that forks without
    ///   exec), the socket could still report events under its old token.
    ///   The token carries the connection's generation ([`crate::token`]),
    ///   so such a stale event does not match the slot's next client and
    ///   the loop drops it: the same guarantee an explicit deregistration
    ///   gave, kept by the token rather than by the order of the calls.
    pub(super) fn deregister(&mut self, observer: Option<&dyn Observer>) {
        debug!("{}: deregistered: closing the socket", self.connection.name());
        report_interest(observer, &self.connection, Some(self.interest), None);
    }

    /// The stream and the connection, for one turn.
    pub(super) fn parts(&mut self) -> (&mut Connection, &mut TcpStream) {
        (&mut self.connection, &mut self.stream)
    }

    /// Closes the socket by dropping it. A reply cut off mid-write closes
    /// abortively (SO_LINGER 0): the client then sees a reset rather than an
    /// end of stream that would make the partial reply look whole.
    pub(super) fn close(self) {
        if self.connection.closes_with_reset()
            && let Err(e) = transport::reset_on_close(&self.stream)
        {
            trace!("{}: cannot set SO_LINGER 0: {e}", self.connection.name());
        }
    }
}

/// `READABLE`, `WRITABLE`, as mio spells them.
fn interest_name(interest: Interest) -> &'static str {
    match (interest.is_readable(), interest.is_writable()) {
        (true, true) => "READABLE | WRITABLE",
        (false, true) => "WRITABLE",
        _ => "READABLE",
    }
}

fn report_interest(
    observer: Option<&dyn Observer>,
    connection: &Connection,
    from: Option<Interest>,
    to: Option<Interest>,
) {
    observer::report(observer, || observer::Event::Interest {
        connection: connection.name().id,
        from,
        to,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Memory per idle connection is mostly this struct (its slab slot)
    /// plus its deadline entry; docs/benchmarks.md measures the sum. The
    /// stream is 4 bytes in release builds (a descriptor) and 16 in debug
    /// ones, where mio adds a registration check; the rest is ours. The
    /// PROXY protocol added the balancer's address to every `Name` and a
    /// charge to every client: 8 bytes in all, once both were made compact
    /// (`connection::Address`, a charge that holds no address).
    #[test]
    fn a_client_stays_small() {
        assert!(
            size_of::<Connection>() <= 112,
            "Connection is {} bytes",
            size_of::<Connection>()
        );
        let ours = size_of::<Client>() - size_of::<TcpStream>();
        // 124 in release builds; debug builds pad the wider stream to 128.
        assert!(ours <= 128, "Client without its stream is {ours} bytes");
    }
}
