//! Logging set-up: env_logger on stderr.
//!
//! `-v`, `-vv` and `-q` set the level of revecho's own target only, so a
//! learner's `-vv` shows our reads and writes without mio's internals. With
//! none of them, `RUST_LOG` is used as usual.

use log::LevelFilter;

/// Installs the logger. `verbose` counts `-v`; `quiet` is `-q`.
pub fn init(verbose: u8, quiet: bool) {
    let mut builder = if verbose > 0 || quiet {
        let level = match (quiet, verbose) {
            (true, _) => LevelFilter::Warn,
            (false, 1) => LevelFilter::Debug,
            (false, _) => LevelFilter::Trace,
        };
        let mut builder = env_logger::Builder::new();
        builder
            .filter_level(LevelFilter::Warn)
            .filter_module("revecho", level);
        builder
    } else {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,revecho=info"))
    };
    builder.format_timestamp_millis().init();
}
