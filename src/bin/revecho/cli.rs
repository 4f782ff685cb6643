//! The command line: `revecho [OPTIONS]` serves, `revecho send` is the client.
//!
//! Every server flag can also come from a `REVECHO_*` variable. A flag beats
//! its variable, and the variable beats the default.

use std::ffi::OsString;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use revecho::{Cidr, Config, Framing};

const AFTER_HELP: &str = "\
SIZE values take a unit: KiB, MiB, GiB are binary (64KiB = 65536 bytes); k, KB, MB are decimal (1MB = 1000000 bytes); a bare number is bytes.
DURATION values are like 30s, 500ms, 2m, 1h 30m.

Log level: -v, -vv and -q set revecho's own level; without them RUST_LOG is used (default: warn,revecho=info).";

const SEND_AFTER_HELP: &str = "\
After the message, send shuts down its write side (a half-close): eof framing waits for it, line framing takes it as the end of a line without a newline. --keep-open leaves it open, as the seed's client did.

The reply is checked against the message: the message reversed, or, for a message with a newline, its first line's reply (line framing). A palindrome cannot be told from an echo.

Exit status: 0 the whole reply; 1 cannot connect, or no reply byte before the timeout; 2 a usage error; 3 a reply that is not whole (no reply, part of one, a reset, a timeout after some reply bytes, not a reversal), explained in one line on stderr. The bytes that came back are printed either way.";

/// A TCP server that replies with the bytes it received, reversed, then closes.
#[derive(Debug, Parser)]
#[command(name = "revecho", version, about, args_conflicts_with_subcommands = true, after_help = AFTER_HELP)]
pub struct Cli {
    /// Run a client instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl Cli {
    /// Parses `std::env::args_os()`, exiting with clap's message and code 2
    /// on a usage error.
    ///
    /// clap reads every `env` variable of the top-level arguments even when
    /// a subcommand runs, so `REVECHO_MAX_MESSAGE=banana` would make
    /// `revecho send` fail over a server setting it never uses. Server
    /// options cannot be combined with a subcommand, so when the first
    /// argument names one, the server arguments lose their variables.
    pub fn parse_args() -> Cli {
        let mut command = Cli::command();
        let subcommand_first = std::env::args_os()
            .nth(1)
            .is_some_and(|first| command.find_subcommand(&first).is_some());
        if subcommand_first {
            command = command.mut_args(|arg| arg.env(None));
        }
        let matches = command.get_matches_mut();
        if let Some(conflict) = verbose_with_quiet(&matches) {
            command.error(ErrorKind::ArgumentConflict, conflict).exit();
        }
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        // clap fills in the default address, so only the value source tells
        // an explicit --listen (or REVECHO_LISTEN) from none at all.
        cli.server.listen_given = matches!(
            matches.value_source("listen"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        cli
    }
}

/// `-v` with `-q` is a usage error. clap's own conflict check would name
/// the counted flag `--verbose...`, so the check is made here, in words a
/// person would use.
fn verbose_with_quiet(matches: &ArgMatches) -> Option<&'static str> {
    let verbose = matches
        .try_get_one::<u8>("verbose")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(0);
    let quiet = matches
        .try_get_one::<bool>("quiet")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false);
    (verbose > 0 && quiet).then_some("the argument '--verbose' cannot be used with '--quiet'")
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a message to a revecho server and print the reply.
    #[command(version, display_name = "revecho", after_help = SEND_AFTER_HELP)]
    Send(SendArgs),
    /// Load a server with many connections and report rates, latencies and errors.
    Bench(crate::bench::BenchArgs),
}

/// How a message ends (see `Framing`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FramingArg {
    /// Whatever has arrived when the socket has been drained (the seed's single recv).
    Burst,
    /// Up to the first newline; the reply keeps the line's terminator at the end.
    Line,
    /// Everything until the client shuts down its write side.
    Eof,
}

impl From<FramingArg> for Framing {
    fn from(framing: FramingArg) -> Self {
        match framing {
            FramingArg::Burst => Framing::Burst,
            FramingArg::Line => Framing::Line,
            FramingArg::Eof => Framing::Eof,
        }
    }
}

/// Server options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on, host:port; repeat or separate with commas for more. A host name binds every address it resolves to
    #[arg(short, long = "listen", value_name = "ADDR", env = "REVECHO_LISTEN", value_delimiter = ',',
          default_value = Config::DEFAULT_LISTEN, value_parser = parse_host_port)]
    pub listen: Vec<String>,

    /// What counts as one message
    #[arg(long, value_enum, env = "REVECHO_FRAMING", default_value = "burst")]
    pub framing: FramingArg,

    /// Most bytes one message may have (a line's terminator counts); more gets no reply; 0 is rejected
    #[arg(long, value_name = "SIZE", env = "REVECHO_MAX_MESSAGE", default_value = "1MiB", value_parser = parse_nonzero_size)]
    pub max_message: usize,

    /// Bytes asked for per read call (the seed used 1024); 0 is rejected, as a 0-byte read looks like end of stream
    #[arg(long, value_name = "SIZE", env = "REVECHO_READ_CHUNK", default_value = "16KiB", value_parser = parse_nonzero_size)]
    pub read_chunk: usize,

    /// Bytes offered per write call, or "unlimited"
    #[arg(long, value_name = "SIZE", env = "REVECHO_WRITE_CHUNK", default_value = "unlimited", value_parser = parse_write_chunk)]
    pub write_chunk: WriteChunk,

    /// Connections held at once, lingering ones included; beyond it clients wait in the backlog
    #[arg(long, value_name = "N", env = "REVECHO_MAX_CONNECTIONS", default_value = "10000", value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// Connections one client address may hold at once (IPv4: per address, IPv6: per /64); more are closed at once. 0: no limit. Behind a load balancer, use it only with --proxy-protocol
    #[arg(
        long,
        value_name = "N",
        env = "REVECHO_MAX_CONNECTIONS_PER_IP",
        default_value = "0"
    )]
    pub max_connections_per_ip: usize,

    /// Listen backlog: connections the kernel queues before accept
    #[arg(long, value_name = "N", env = "REVECHO_BACKLOG", default_value = "1024",
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// Close a connection that moves no byte for this long; 0 disables
    #[arg(long, value_name = "DURATION", env = "REVECHO_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Close a connection whose message has not fully arrived this long after accept; 0 disables
    #[arg(long, value_name = "DURATION", env = "REVECHO_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// After the reply, read and discard for up to this long before closing; 0 closes right after shutdown
    #[arg(long, value_name = "DURATION", env = "REVECHO_LINGER", default_value = "2s", value_parser = parse_duration)]
    pub linger: Duration,

    /// On SIGINT/SIGTERM, how long in-flight connections get to finish
    #[arg(long, value_name = "DURATION", env = "REVECHO_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Event loops, each on its own thread with its own listening socket (SO_REUSEPORT), or "auto" for one per core
    #[arg(long, value_name = "N|auto", env = "REVECHO_WORKERS", default_value = "1", value_parser = parse_workers)]
    pub workers: WorkerCount,

    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer; the client it names is logged and counted per ip
    #[arg(long, env = "REVECHO_PROXY_PROTOCOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub proxy_protocol: bool,

    /// Only these peers (CIDR ranges, e.g. 10.0.0.0/8) may send a PROXY header; others are refused. Repeat or separate with commas
    #[arg(long, value_name = "CIDR", env = "REVECHO_PROXY_FROM", value_delimiter = ',', value_parser = parse_cidr)]
    pub proxy_from: Vec<Cidr>,

    /// More log detail: -v shows every poll wakeup, readiness event, registration change and state change; -vv every read and write
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors
    #[arg(short, long)]
    pub quiet: bool,

    /// Whether --listen or REVECHO_LISTEN was given, rather than the
    /// default: beside inherited sockets, that is a usage error.
    #[arg(skip)]
    pub listen_given: bool,
}

/// `--workers`: a number, or one per core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCount {
    /// Exactly this many (at least 1).
    Exactly(usize),
    /// `std::thread::available_parallelism`: the cores this process may
    /// use (its CPU affinity and cgroup quota included).
    Auto,
}

impl WorkerCount {
    /// How many workers to start.
    pub fn resolve(self) -> usize {
        match self {
            WorkerCount::Exactly(count) => count,
            WorkerCount::Auto => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// The most workers accepted: far more than any machine's cores, but a
/// bound on the threads and sockets a typo can ask for.
const MAX_WORKERS: usize = 1024;

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    text.parse().map_err(|e: revecho::CidrError| e.to_string())
}

fn parse_workers(text: &str) -> Result<WorkerCount, String> {
    if text == "auto" {
        return Ok(WorkerCount::Auto);
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (or auto)".into()),
        Ok(count) if count <= MAX_WORKERS => Ok(WorkerCount::Exactly(count)),
        Ok(_) => Err(format!("must be at most {MAX_WORKERS}")),
        Err(_) => Err("expected a number of workers or auto".into()),
    }
}

impl ServerArgs {
    /// Checks what no single flag's parser can: a combination of valid
    /// values (`--max-connections` plus `--backlog` beyond the token space).
    /// On failure, exits like any usage error: clap's message, status 2.
    pub fn check_combination(&self) {
        if let Err(message) = self.to_config().validate() {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }

    /// The library configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let disabled_if_zero = |duration: Duration| (!duration.is_zero()).then_some(duration);
        Config {
            listen: self.listen.clone(),
            framing: self.framing.into(),
            max_message: self.max_message,
            read_chunk: self.read_chunk,
            write_chunk: self.write_chunk.0,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            backlog: self.backlog,
            idle_timeout: disabled_if_zero(self.idle_timeout),
            read_timeout: disabled_if_zero(self.read_timeout),
            linger: self.linger,
            shutdown_grace: self.shutdown_grace,
            handle_signals: true,
            proxy_protocol: self.proxy_protocol,
            proxy_from: self.proxy_from.clone(),
        }
    }
}

/// `revecho send` options.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Server address, host:port
    #[arg(short, long, value_name = "ADDR", default_value = Config::DEFAULT_LISTEN, value_parser = parse_host_port)]
    pub connect: String,

    /// Give up if the reply has not ended within this time, counted from the connect; 0 waits without limit
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Do not shut down the write side after sending, as the seed's client did (eof framing then never replies)
    #[arg(long)]
    pub keep_open: bool,

    /// Shut down the write side after sending: the default, accepted so older scripts keep working
    #[arg(long, conflicts_with = "keep_open")]
    pub half_close: bool,

    /// Narrate each socket call on stderr, like the seed session's REPL
    #[arg(long)]
    pub trace: bool,

    /// The message; read from standard input when omitted
    pub message: Option<OsString>,
}

/// `--write-chunk`: a size, or no limit.
#[derive(Clone, Copy, Debug)]
pub struct WriteChunk(pub Option<usize>);

fn parse_size(text: &str) -> Result<usize, String> {
    let bytes = parse_size::parse_size(text).map_err(|e| format!("{e} (try 64KiB, 1MiB or 1000)"))?;
    usize::try_from(bytes).map_err(|_| "too large for this machine".to_string())
}

fn parse_nonzero_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err("must be at least 1 byte".into()),
        bytes => Ok(bytes),
    }
}

/// Checks that `text` has the shape `host:port`, and returns it unchanged:
/// resolving it is left to whoever uses it, since a well-formed name that
/// does not resolve is a run-time error, not a usage error. The port follows
/// the last colon, so a bare IPv6 address works (`::1:0`), as does the
/// bracketed form (`[::1]:0`).
fn parse_host_port(text: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected host:port, as in 127.0.0.1:7342 or [::1]:7342";
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]") {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
            None => (bracketed, None),
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let complaint = if text.is_empty() {
        "an empty address".to_string()
    } else if host.is_empty() {
        "no host".to_string()
    } else if let Some(port) = port.filter(|port| !port.is_empty()) {
        if !port.bytes().all(|byte| byte.is_ascii_digit()) {
            format!("the port {port:?} is not a number")
        } else if port.parse::<u16>().is_err() {
            format!("the port {port} is out of range (0 to 65535)")
        } else if text.starts_with('[') || host.contains(':') {
            // Colons in the host are only an IPv6 address's: std parses
            // exactly that, with or without brackets, scope included.
            let bracketed = format!("[{host}]:{port}");
            match bracketed.parse::<std::net::SocketAddrV6>() {
                Ok(_) if text.starts_with('[') && text != bracketed => format!("{text:?} is not [host]:port"),
                Ok(_) => return Ok(text.to_string()),
                // `::1` splits into `:` and `1`: an IPv6 address with no port.
                Err(_) if text.parse::<std::net::Ipv6Addr>().is_ok() => "no port".to_string(),
                Err(_) => format!("{host} is not an IPv6 address"),
            }
        } else if host.contains(['[', ']']) {
            format!("{host} is not a host name or IP address")
        } else {
            return Ok(text.to_string());
        }
    } else {
        "no port".to_string()
    };
    Err(format!("{complaint}; {EXPECTED}"))
}

fn parse_write_chunk(text: &str) -> Result<WriteChunk, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(WriteChunk(None));
    }
    parse_nonzero_size(text).map(|bytes| WriteChunk(Some(bytes)))
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    let limit = revecho::MAX_CONNECTIONS;
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > limit => Err(format!("must be at most {limit}")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e} (try 30s, 500ms or 2m)"))?;
    if duration > Config::MAX_DURATION {
        return Err("must be at most 100 years (0 disables a timeout)".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_follow_the_binary_and_decimal_conventions() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2k"), Ok(2_000));
        assert_eq!(parse_size("1000"), Ok(1_000));
        assert!(parse_size("banana").is_err());
        assert!(parse_nonzero_size("0").is_err());
    }

    #[test]
    fn well_formed_addresses_are_accepted_unchanged() {
        for address in [
            "127.0.0.1:7342",
            "localhost:0",
            "nosuch.invalid:7342",
            "[::1]:0",
            "::1:0",
            "[fe80::1%2]:80",
            "127.0.0.1:65535",
        ] {
            assert_eq!(parse_host_port(address).as_deref(), Ok(address));
        }
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (address, complaint) in [
            ("", "an empty address"),
            ("127.0.0.1", "no port"),
            ("localhost", "no port"),
            ("127.0.0.1:", "no port"),
            (":7342", "no host"),
            ("[]:7342", "no host"),
            ("127.0.0.1:http", "the port \"http\" is not a number"),
            ("127.0.0.1:-1", "is not a number"),
            ("127.0.0.1:99999", "the port 99999 is out of range"),
            ("[::1]", "no port"),
            ("[::1]:", "no port"),
            ("[::1]80", "is not [host]:port"),
            ("::1", "no port"),
            ("fe80::x:80", "fe80::x is not an IPv6 address"),
            ("[localhost]:80", "localhost is not an IPv6 address"),
            ("a]b:80", "is not a host name or IP address"),
        ] {
            let error = parse_host_port(address).expect_err(address);
            assert!(error.contains(complaint), "{address:?}: {error}");
            assert!(error.contains("host:port"), "{address:?}: {error}");
        }
    }

    #[test]
    fn workers_are_a_positive_number_or_auto() {
        assert_eq!(parse_workers("1"), Ok(WorkerCount::Exactly(1)));
        assert_eq!(parse_workers("4"), Ok(WorkerCount::Exactly(4)));
        assert_eq!(parse_workers("auto"), Ok(WorkerCount::Auto));
        assert!(WorkerCount::Auto.resolve() >= 1);
        for bad in ["0", "-1", "many", "1025", ""] {
            assert!(parse_workers(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_durations_are_accepted() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("300000000000y").is_err());
    }
}
