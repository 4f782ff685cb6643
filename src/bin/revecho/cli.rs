//! The command line: `revecho [OPTIONS]` serves, `revecho send` is the client.
//!
//! Every server flag can also come from a `REVECHO_*` variable. A flag beats
//! its variable, and the variable beats the default.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use revecho::{Config, Framing};

const AFTER_HELP: &str = "\
SIZE values take a unit: KiB, MiB, GiB are binary (64KiB = 65536 bytes); k, KB, MB are decimal (1MB = 1000000 bytes); a bare number is bytes.
DURATION values are like 30s, 500ms, 2m, 1h 30m.

Log level: -v, -vv and -q set revecho's own level; without them RUST_LOG is used (default: info).";

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
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a message to a revecho server and print the reply.
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
          default_value = Config::DEFAULT_LISTEN)]
    pub listen: Vec<String>,

    /// What counts as one message
    #[arg(long, value_enum, env = "REVECHO_FRAMING", default_value = "burst")]
    pub framing: FramingArg,

    /// Most bytes one message may have (a line's terminator counts); more gets no reply
    #[arg(long, value_name = "SIZE", env = "REVECHO_MAX_MESSAGE", default_value = "1MiB", value_parser = parse_size)]
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

    /// More log detail: -v shows every readiness event and state change, -vv every read and write
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors
    #[arg(short, long)]
    pub quiet: bool,
}

impl ServerArgs {
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
            backlog: self.backlog,
            idle_timeout: disabled_if_zero(self.idle_timeout),
            read_timeout: disabled_if_zero(self.read_timeout),
            linger: self.linger,
            shutdown_grace: self.shutdown_grace,
            handle_signals: true,
        }
    }
}

/// `revecho send` options.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Server address, host:port
    #[arg(short, long, value_name = "ADDR", default_value = Config::DEFAULT_LISTEN)]
    pub connect: String,

    /// Give up if the reply has not ended within this time; 0 waits without limit
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Shut down the write side after sending (eof framing waits for it)
    #[arg(long)]
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
    fn zero_durations_are_accepted() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("300000000000y").is_err());
    }
}
