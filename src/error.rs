//! Naming what an I/O error means for a non-blocking server.
//!
//! Two conditions are not failures at all and come up at every socket call,
//! so they get names, as in mio's `examples/tcp_server.rs`:
//! [`would_block`] (the kernel has nothing to give or no room to take: wait
//! for the next readiness event) and [`interrupted`] (a signal arrived
//! mid-call: simply call again). [`describe`] turns a real failure into the
//! short lowercase text of a one-line message.

use std::io::{self, ErrorKind};

/// The call would have had to wait: not an error on a non-blocking socket,
/// but the signal to stop and wait for the next readiness event.
pub(crate) fn would_block(error: &io::Error) -> bool {
    error.kind() == ErrorKind::WouldBlock
}

/// A signal interrupted the call before it did anything: call it again.
pub(crate) fn interrupted(error: &io::Error) -> bool {
    error.kind() == ErrorKind::Interrupted
}

/// A short lowercase description of an I/O error, without "(os error 98)",
/// for one-line messages such as `cannot listen on 127.0.0.1:7342: address
/// already in use`.
pub fn describe(error: &io::Error) -> String {
    match error.kind() {
        ErrorKind::AddrInUse => "address already in use".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::AddrNotAvailable => "address not available".into(),
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let text = error.to_string();
            let text = match text.find(" (os error") {
                Some(end) => text[..end].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_drops_the_os_error_number_and_capital() {
        let error = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(describe(&error), "too many open files");
        assert_eq!(
            describe(&io::Error::from(ErrorKind::AddrInUse)),
            "address already in use"
        );
    }

    #[test]
    fn the_two_conditions_that_are_not_failures_have_names() {
        assert!(would_block(&io::Error::from(ErrorKind::WouldBlock)));
        assert!(!would_block(&io::Error::from(ErrorKind::Interrupted)));
        assert!(interrupted(&io::Error::from(ErrorKind::Interrupted)));
        assert!(!interrupted(&io::Error::from(ErrorKind::ConnectionReset)));
    }
}
