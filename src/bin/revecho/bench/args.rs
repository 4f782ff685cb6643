//! `revecho bench` options, and the parsers for their values.

use std::time::Duration;

use clap::Args;
use revecho::Config;

use crate::cli::FramingArg;

/// `revecho bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server address, host:port
    #[arg(short, long, value_name = "ADDR", default_value = Config::DEFAULT_LISTEN)]
    pub connect: String,

    /// Connections in flight at once (closed loop: a finished one is replaced at once)
    #[arg(long, value_name = "N", default_value = "32", value_parser = parse_positive)]
    pub concurrency: u64,

    /// How long to measure, after the warmup
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration,
          conflicts_with = "requests")]
    pub duration: Duration,

    /// Measure exactly this many connections instead of running for --duration
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub requests: Option<u64>,

    /// Bytes per message; with line framing its last byte is the newline
    #[arg(long, value_name = "SIZE", default_value = "13", value_parser = parse_positive_size)]
    pub payload: usize,

    /// How the server finds the end of a message: burst sends it and waits, line ends it with a newline, eof shuts down the write side
    #[arg(long, value_enum, default_value = "burst")]
    pub framing: FramingArg,

    /// Open loop: start this many connections per second, whatever the replies do (latency counts from the planned start)
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub rate: Option<u64>,

    /// Run the same load this long first, and count none of it
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub warmup: Duration,

    /// A connection not finished this long after its start counts as a timeout error
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// Instead of load, open this many connections that send nothing and hold them for --hold
    #[arg(long, value_name = "K", value_parser = parse_positive, requires = "hold",
          conflicts_with_all = ["requests", "rate", "warmup"])]
    pub idle: Option<u64>,

    /// How long --idle holds its connections once all are open
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, requires = "idle")]
    pub hold: Option<Duration>,

    /// Print the result as one JSON object (field names carry their units)
    #[arg(long)]
    pub json: bool,
}

fn parse_positive(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_positive_size(text: &str) -> Result<usize, String> {
    let bytes = parse_size::parse_size(text).map_err(|e| format!("{e} (try 13, 64KiB or 1MiB)"))?;
    match usize::try_from(bytes) {
        Ok(0) => Err("must be at least 1 byte".into()),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err("too large for this machine".into()),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e} (try 10s, 500ms or 2m)"))?;
    if duration > Config::MAX_DURATION {
        return Err("must be at most 100 years".into());
    }
    Ok(duration)
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_where_it_would_make_a_run_unbounded_or_empty() {
        assert!(parse_positive("0").is_err());
        assert!(parse_positive_size("0").is_err());
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_positive_size("64KiB"), Ok(65_536));
        assert_eq!(parse_positive("32"), Ok(32));
    }
}
