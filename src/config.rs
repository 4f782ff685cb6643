//! `Config`: everything a [`Server`](crate::Server) needs to know before it binds.
//!
//! The struct is plain data with public fields and a `Default`, so embedders
//! can write `Config { framing: Framing::Line, ..Config::default() }`. The
//! binary fills it from flags and `REVECHO_*` variables; the library never
//! reads the environment itself.

use std::fmt;
use std::time::Duration;

use crate::proxy_protocol::cidr::Cidr;

/// Where one message ends. TCP is a byte stream with no message boundaries,
/// so the server has to pick a rule; this is that rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// Whatever has arrived by the time a readable event has been drained to
    /// `WouldBlock` (or end of stream). This is what the seed session's single
    /// `recv(1024)` did, and it depends on timing: a message sent in two
    /// pieces may be cut in two.
    #[default]
    Burst,
    /// The bytes up to and including the first `\n`. The reply is the line's
    /// content reversed, followed by the same terminator (`\n` or `\r\n`).
    /// If the client half-closes before any newline, the bytes so far are the
    /// line and the reply has no terminator.
    Line,
    /// Everything until the client shuts down its write half.
    Eof,
}

impl Framing {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Burst => "burst",
            Framing::Line => "line",
            Framing::Eof => "eof",
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings for one [`Server`](crate::Server).
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on, as `host:port`. A host name binds every
    /// address it resolves to (`localhost` gives 127.0.0.1 and, where it
    /// exists, ::1). Port 0 picks a free port; all addresses of one entry then
    /// share the port of the first one bound.
    pub listen: Vec<String>,
    /// Where a message ends.
    pub framing: Framing,
    /// The most bytes one connection may send as its message (a line's
    /// terminator counts). A client that sends more gets no reply.
    pub max_message: usize,
    /// Bytes asked for per `read` call. Must not be 0: a zero-length read
    /// returns 0, which is indistinguishable from end of stream.
    pub read_chunk: usize,
    /// Bytes offered per `write` call; `None` offers the whole rest of the
    /// reply each time.
    pub write_chunk: Option<usize>,
    /// Connections held open at once, lingering ones included. At the limit
    /// the server stops accepting and new clients wait in the kernel backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once (IPv4: per address;
    /// IPv6: per /64). A connection over it is closed at once, without a
    /// reply. 0: no limit, the right choice behind a load balancer or proxy,
    /// where every connection comes from one address.
    pub max_connections_per_ip: usize,
    /// The listen backlog: connections the kernel queues before `accept`.
    pub backlog: u32,
    /// Close a connection that moves no byte for this long. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose whole message has not arrived this long
    /// after accept. `None`: never.
    pub read_timeout: Option<Duration>,
    /// After the reply, how long to keep reading and discarding what the
    /// client still sends before closing. Zero closes right after the
    /// write-side shutdown.
    pub linger: Duration,
    /// On shutdown, how long in-flight connections get to finish.
    pub shutdown_grace: Duration,
    /// Deliver SIGINT and SIGTERM to the loop as shutdown requests. Off by
    /// default: a library should not take over a process's signals unless
    /// asked. The `revecho` binary turns it on.
    pub handle_signals: bool,
    /// Every connection starts with a PROXY protocol header (version 1 or
    /// 2), as a load balancer such as HAProxy sends with `send-proxy-v2`.
    /// The client address it names replaces the balancer's in logs and in
    /// `max_connections_per_ip`. A connection without a valid header is
    /// closed and counted as `proxy_error`.
    pub proxy_protocol: bool,
    /// The peers trusted to send a PROXY header: a connection from any
    /// other address is refused, or any client could claim any address.
    /// Empty: every peer is trusted. Only meaningful with `proxy_protocol`.
    pub proxy_from: Vec<Cidr>,
}

impl Config {
    /// The default address: every address `localhost` resolves to.
    pub const DEFAULT_LISTEN: &'static str = "localhost:7342";

    /// The longest timeout, linger or grace period accepted: 100 years.
    /// Anything longer is surely a typo, and deadlines are computed as
    /// `Instant + Duration`, which must not overflow.
    pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

    /// Checks the values that no type can rule out.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("no address to listen on".into());
        }
        self.validate_limits()
    }

    /// Every check of [`validate`](Self::validate) except `listen`, for a
    /// server given sockets that are already listening.
    pub(crate) fn validate_limits(&self) -> Result<(), String> {
        if self.read_chunk == 0 {
            return Err(
                "read chunk must be at least 1 byte: a zero-length read looks like end of stream".into(),
            );
        }
        if self.write_chunk == Some(0) {
            return Err("write chunk must be at least 1 byte".into());
        }
        if self.max_connections == 0 {
            return Err("max connections must be at least 1".into());
        }
        if self.max_connections > crate::token::MAX_CONNECTIONS {
            return Err(format!(
                "max connections must be at most {}",
                crate::token::MAX_CONNECTIONS
            ));
        }
        let durations = [
            ("idle timeout", self.idle_timeout.unwrap_or_default()),
            ("read timeout", self.read_timeout.unwrap_or_default()),
            ("linger", self.linger),
            ("shutdown grace", self.shutdown_grace),
        ];
        for (name, duration) in durations {
            if duration > Self::MAX_DURATION {
                return Err(format!("{name} must be at most 100 years"));
            }
        }
        if !self.proxy_from.is_empty() && !self.proxy_protocol {
            return Err(
                "--proxy-from needs --proxy-protocol: without it no peer sends a header to trust".into(),
            );
        }
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return Err("backlog must be between 1 and 2147483647".into());
        }
        // At shutdown the whole backlog is taken in past the limit, so the
        // tokens must tell `max_connections + backlog` connections apart.
        if self.max_connections.saturating_add(self.backlog as usize) > crate::token::MAX_CONNECTIONS {
            return Err(format!(
                "max connections ({}) plus backlog ({}) must be at most {}: at shutdown the backlog is taken in past the limit",
                self.max_connections,
                self.backlog,
                crate::token::MAX_CONNECTIONS
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![Self::DEFAULT_LISTEN.to_string()],
            framing: Framing::Burst,
            max_message: 1024 * 1024,
            read_chunk: 16 * 1024,
            write_chunk: None,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            backlog: 1024,
            idle_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            handle_signals: false,
            proxy_protocol: false,
            proxy_from: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn max_connections_plus_backlog_must_fit_the_token_space() {
        let fits = Config {
            max_connections: crate::token::MAX_CONNECTIONS - 16,
            backlog: 16,
            ..Config::default()
        };
        assert_eq!(fits.validate(), Ok(()));
        let too_many = Config { backlog: 17, ..fits };
        let error = too_many.validate().expect_err("one past the token space");
        assert!(error.contains("plus backlog (17) must be at most"), "{error}");
    }

    #[test]
    fn trusted_proxies_without_the_proxy_protocol_are_refused() {
        let config = Config {
            proxy_from: vec!["10.0.0.0/8".parse().expect("cidr")],
            ..Config::default()
        };
        let error = config.validate().expect_err("--proxy-from alone");
        assert!(error.contains("--proxy-from needs --proxy-protocol"), "{error}");
        let with_protocol = Config {
            proxy_protocol: true,
            ..config
        };
        assert_eq!(with_protocol.validate(), Ok(()));
    }
}
