//! The client's own CPU time, so a report shows when the load generator,
//! not the server, was the limit (near 100% of one core).
//!
//! Read from `/proc/self/stat` rather than `getrusage`, which would need
//! `unsafe` (or another crate) for a libc call: fields 14 and 15 are the
//! user and system time of the whole process in clock ticks.

use std::time::Duration;

/// Clock ticks per second in `/proc` (`USER_HZ`): 100 on every Linux
/// architecture Rust supports, whatever the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time this process has used so far; `None` where
/// `/proc` is missing or unreadable (not Linux).
pub fn used() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// The user plus system time in a `/proc/PID/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted
/// from its closing parenthesis: field 3 is the first after it.
fn parse_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = user + system;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_added_even_after_a_name_with_spaces() {
        let line = "4242 (a (strange) name) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(1750)));
    }

    #[test]
    fn this_process_has_a_readable_cpu_time() {
        assert!(used().is_some());
    }
}
