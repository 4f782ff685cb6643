//! Manners towards a person at a terminal, decided by pure functions that
//! take "is a terminal" as a parameter, so unit tests need no pty.
//!
//! A pipe always gets the raw reply bytes and nothing else.

/// Whether to print a newline after `reply`: only on a terminal, and only
/// when the reply does not end in one, so the shell prompt does not stick
/// to the reply.
pub fn newline_after(reply: &[u8], stdout_is_terminal: bool) -> bool {
    stdout_is_terminal && !reply.is_empty() && !reply.ends_with(b"\n")
}

/// The hint to print before reading the message from standard input: only
/// when no MESSAGE was given and a person is typing at a terminal, who
/// might otherwise wait for a prompt that never comes.
pub fn stdin_hint(message_given: bool, stdin_is_terminal: bool) -> Option<&'static str> {
    (!message_given && stdin_is_terminal)
        .then_some("type the message, then press Ctrl-D to send it (twice if the last line has no newline)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_a_newline_after_a_reply_that_lacks_one() {
        assert!(newline_after(b"!dlrow ,olleH", true));
    }

    #[test]
    fn a_terminal_gets_no_second_newline() {
        assert!(!newline_after(b"cba\n", true));
    }

    #[test]
    fn a_terminal_gets_nothing_after_an_empty_reply() {
        assert!(!newline_after(b"", true));
    }

    #[test]
    fn a_pipe_gets_the_raw_bytes_only() {
        assert!(!newline_after(b"!dlrow ,olleH", false));
        assert!(!newline_after(b"", false));
    }

    #[test]
    fn a_person_typing_the_message_is_told_how_to_end_it() {
        let hint = stdin_hint(false, true).expect("a hint");
        assert!(hint.contains("Ctrl-D"), "{hint}");
        assert!(!hint.contains('\n'));
    }

    #[test]
    fn no_hint_for_a_message_argument_or_piped_input() {
        assert_eq!(stdin_hint(true, true), None);
        assert_eq!(stdin_hint(false, false), None);
        assert_eq!(stdin_hint(true, false), None);
    }
}
