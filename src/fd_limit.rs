//! Raising the soft limit on open file descriptors.
//!
//! Every connection, lingering ones included, holds a descriptor, and so do
//! the queued clients that `accept` is about to take. Linux starts most
//! processes with a soft limit of 1024, far below the default 10,000
//! connections, while the hard limit is usually much higher. Like Go's
//! runtime, we raise the soft limit towards the hard one, but only as far as
//! the configuration needs.

use std::io;

use crate::Config;

/// Descriptors kept for things other than clients: the poll instance, the
/// waker, the signal pipe, listeners, stdio, and the log.
pub const RESERVE: u64 = 64;

/// What [`raise_fd_limit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// Descriptors the configuration may need.
    pub wanted: u64,
    /// The soft limit now in force.
    pub soft: u64,
}

impl FdLimit {
    /// Whether the limit is below what the configuration may need.
    pub fn is_short(&self) -> bool {
        self.soft < self.wanted
    }
}

/// Raises the soft RLIMIT_NOFILE to cover `max_connections + backlog +`
/// [`RESERVE`], or as close as the hard limit allows. Never lowers it.
pub fn raise_fd_limit(config: &Config) -> io::Result<FdLimit> {
    raise_fd_limit_for_workers(config, 1)
}

/// [`raise_fd_limit`] for `workers` loops: each holds its share of
/// `max_connections` (rounded up), its own backlog per listener, its own
/// poll and waker.
pub fn raise_fd_limit_for_workers(config: &Config, workers: usize) -> io::Result<FdLimit> {
    let workers = workers.max(1) as u64;
    let connections = (config.max_connections as u64).div_ceil(workers) * workers;
    let wanted = connections + workers * u64::from(config.backlog) + workers * RESERVE;
    let soft = rlimit::increase_nofile_limit(wanted)?;
    Ok(FdLimit { wanted, soft })
}
