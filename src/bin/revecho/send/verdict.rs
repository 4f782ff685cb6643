//! Whether a reply is whole, judged against the message that was sent.
//!
//! `send` cannot see the server's framing, but it knows what it sent, so it
//! can tell a whole reply from every way an exchange can fall short. Pure
//! functions on bytes: the cases are unit-tested without a socket.

use std::time::Duration;

use super::count;

/// How reading the reply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `recv` returned 0: the server closed its side, after its last byte.
    Closed,
    /// The connection was reset, while reading or already while sending.
    Reset,
    /// The deadline passed before the server closed.
    TimedOut,
    /// More bytes came back than the message had: no reversal is that long,
    /// so reading stopped there (which also bounds the memory a server can
    /// make `send` use).
    TooLong,
    /// Any other error, described.
    Failed(String),
}

/// What the reply amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole reply: the message reversed, or its first line's reply.
    Whole,
    /// The server closed without sending a byte.
    NoReply,
    /// The reversal of the message's first `covered` bytes, and no more.
    Partial { covered: usize, sent: usize },
    /// A reset after `after` reply bytes.
    Reset { after: usize },
    /// The deadline passed after `after` reply bytes.
    TimedOut { after: usize },
    /// Another error after `after` reply bytes.
    Failed { after: usize, error: String },
    /// Bytes that are not a reversal of the message.
    NotAReversal { got: usize, sent: usize },
}

/// What `explain` needs besides the verdict.
pub struct Context<'a> {
    /// The server address as given.
    pub server: &'a str,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--keep-open`: no half-close was sent.
    pub keep_open: bool,
}

/// Judges `reply`, which ended as `ending`, against `message`.
///
/// A reply is whole when it is the exact reversal of the message (an empty
/// reply to an empty message included) or, when the message holds a `\n`,
/// the reply line framing gives: the first line's content reversed, then
/// its terminator. The bytes decide, whether the stream then ended or was
/// reset: a line server may well reset a client still sending the rest of
/// a long message. Only a timeout leaves a reply unfinished whatever its bytes.
pub fn judge(message: &[u8], reply: &[u8], ending: &Ending) -> Verdict {
    let after = reply.len();
    if *ending != Ending::TimedOut && is_whole(message, reply) {
        return Verdict::Whole;
    }
    match ending {
        Ending::TimedOut => Verdict::TimedOut { after },
        Ending::Reset => Verdict::Reset { after },
        Ending::Failed(error) => Verdict::Failed {
            after,
            error: error.clone(),
        },
        Ending::Closed | Ending::TooLong if reply.is_empty() => Verdict::NoReply,
        Ending::Closed | Ending::TooLong if is_reversed_prefix(message, reply) => Verdict::Partial {
            covered: reply.len(),
            sent: message.len(),
        },
        Ending::Closed | Ending::TooLong => Verdict::NotAReversal {
            got: reply.len(),
            sent: message.len(),
        },
    }
}

impl Verdict {
    /// The exit status: 0 for a whole reply, 1 when there is nothing to
    /// judge (a timeout before any reply byte), 3 for every reply that is
    /// not whole.
    pub fn exit_status(&self) -> u8 {
        match self {
            Verdict::Whole => 0,
            Verdict::TimedOut { after: 0 } => 1,
            _ => 3,
        }
    }

    /// The one line that says what went wrong and what to try; `None` for
    /// a whole reply.
    pub fn explain(&self, context: &Context) -> Option<String> {
        const SEE_THE_LOG: &str = "see its log: over --max-message, a per-address limit, a timeout";
        let line = match self {
            Verdict::Whole => return None,
            Verdict::NoReply => format!("the server closed without a reply ({SEE_THE_LOG})"),
            Verdict::Partial { covered, sent } => format!(
                "the reply covers the first {covered} of {} (burst framing takes what has arrived; \
                 try the server's --framing eof)",
                count(*sent, "byte")
            ),
            Verdict::Reset { after: 0 } => {
                format!("the connection was reset before any reply ({SEE_THE_LOG})")
            }
            Verdict::Reset { after } => {
                format!("the connection was reset after {}", count(*after, "reply byte"))
            }
            Verdict::TimedOut { after } => {
                let what = match after {
                    0 => format!("no reply from {}", context.server),
                    _ => format!(
                        "timed out after {} from {}",
                        count(*after, "reply byte"),
                        context.server
                    ),
                };
                let hint = if context.keep_open {
                    "; the server may be waiting for the end of the message, which eof and line \
                     framing need (try without --keep-open)"
                } else {
                    ""
                };
                format!(
                    "{what} within {}{hint}",
                    humantime::format_duration(context.timeout)
                )
            }
            Verdict::Failed { after, error } => {
                format!("recv failed after {}: {error}", count(*after, "reply byte"))
            }
            Verdict::NotAReversal { got, sent } => format!(
                "the reply is not the message reversed ({} back, {} sent); is {} a revecho server?",
                count(*got, "byte"),
                count(*sent, "byte"),
                context.server
            ),
        };
        Some(line)
    }
}

/// The exact reversal, or the first line's reply.
fn is_whole(message: &[u8], reply: &[u8]) -> bool {
    is_reversal(message, reply) || line_reply(message).is_some_and(|line| line == reply)
}

fn is_reversal(message: &[u8], reply: &[u8]) -> bool {
    message.len() == reply.len() && message.iter().rev().eq(reply)
}

/// `reply` is the reversal of the message's first `reply.len()` bytes.
fn is_reversed_prefix(message: &[u8], reply: &[u8]) -> bool {
    reply.len() < message.len() && is_reversal(&message[..reply.len()], reply)
}

/// The reply a line server gives to `message`: its first line's content
/// reversed, then the line's terminator (`\n` or `\r\n`). `None` when the
/// message holds no `\n` (a line server then replies to the half-close with
/// the plain reversal).
fn line_reply(message: &[u8]) -> Option<Vec<u8>> {
    let newline = message.iter().position(|&byte| byte == b'\n')?;
    let line = &message[..=newline];
    let terminator = if line.ends_with(b"\r\n") { 2 } else { 1 };
    let (content, terminator) = line.split_at(line.len() - terminator);
    let mut reply: Vec<u8> = content.iter().rev().copied().collect();
    reply.extend_from_slice(terminator);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reversed(bytes: &[u8]) -> Vec<u8> {
        bytes.iter().rev().copied().collect()
    }

    fn context(keep_open: bool) -> Context<'static> {
        Context {
            server: "127.0.0.1:7342",
            timeout: Duration::from_secs(10),
            keep_open,
        }
    }

    #[test]
    fn the_exact_reversal_is_whole() {
        assert_eq!(
            judge(b"Hello, world!", b"!dlrow ,olleH", &Ending::Closed),
            Verdict::Whole
        );
    }

    #[test]
    fn an_empty_reply_to_an_empty_message_is_whole() {
        assert_eq!(judge(b"", b"", &Ending::Closed), Verdict::Whole);
    }

    #[test]
    fn a_line_servers_reply_to_the_first_line_is_whole() {
        assert_eq!(judge(b"abc\ndef\n", b"cba\n", &Ending::Closed), Verdict::Whole);
        assert_eq!(judge(b"abc\r\ndef", b"cba\r\n", &Ending::Closed), Verdict::Whole);
        assert_eq!(judge(b"\nrest", b"\n", &Ending::Closed), Verdict::Whole);
        // The whole message reversed is whole too (a burst or eof server).
        assert_eq!(judge(b"abc\ndef", b"fed\ncba", &Ending::Closed), Verdict::Whole);
    }

    #[test]
    fn a_line_reply_needs_the_same_terminator() {
        assert_ne!(judge(b"abc\r\n", b"cba\n", &Ending::Closed), Verdict::Whole);
        assert_ne!(judge(b"abc\n", b"\rcba\n", &Ending::Closed), Verdict::Whole);
        // Without a newline in the message there is no line rule.
        assert_ne!(judge(b"abc", b"cba\n", &Ending::Closed), Verdict::Whole);
    }

    #[test]
    fn whole_bytes_are_whole_even_if_a_reset_follows() {
        // A line server replies to the first line, then resets a client
        // still sending the rest of a long message.
        assert_eq!(judge(b"abc\nmore", b"cba\n", &Ending::Reset), Verdict::Whole);
    }

    #[test]
    fn whole_bytes_without_an_end_are_a_timeout() {
        assert_eq!(
            judge(b"abc", b"cba", &Ending::TimedOut),
            Verdict::TimedOut { after: 3 }
        );
    }

    #[test]
    fn a_close_without_a_byte_is_no_reply() {
        assert_eq!(judge(b"abc", b"", &Ending::Closed), Verdict::NoReply);
    }

    #[test]
    fn the_reversal_of_a_prefix_is_partial() {
        let message: Vec<u8> = (0..=255u8).cycle().take(204_800).collect();
        let reply = reversed(&message[..16_384]);
        assert_eq!(
            judge(&message, &reply, &Ending::Closed),
            Verdict::Partial {
                covered: 16_384,
                sent: 204_800
            }
        );
    }

    #[test]
    fn an_echo_is_not_a_reversal() {
        assert_eq!(
            judge(b"abc", b"abc", &Ending::Closed),
            Verdict::NotAReversal { got: 3, sent: 3 }
        );
        // ...except for a palindrome, which no reply can tell from an echo.
        assert_eq!(judge(b"abba", b"abba", &Ending::Closed), Verdict::Whole);
    }

    #[test]
    fn a_reply_longer_than_the_message_is_not_a_reversal() {
        assert_eq!(
            judge(b"abc", b"cbaX", &Ending::TooLong),
            Verdict::NotAReversal { got: 4, sent: 3 }
        );
    }

    #[test]
    fn resets_timeouts_and_errors_count_the_reply_bytes() {
        assert_eq!(
            judge(b"abcdef", b"ba", &Ending::Reset),
            Verdict::Reset { after: 2 }
        );
        assert_eq!(
            judge(b"abcdef", b"", &Ending::TimedOut),
            Verdict::TimedOut { after: 0 }
        );
        assert_eq!(
            judge(b"abcdef", b"x", &Ending::Failed("no route to host".into())),
            Verdict::Failed {
                after: 1,
                error: "no route to host".into()
            }
        );
    }

    #[test]
    fn only_a_timeout_before_any_reply_byte_exits_1() {
        assert_eq!(Verdict::Whole.exit_status(), 0);
        assert_eq!(Verdict::TimedOut { after: 0 }.exit_status(), 1);
        for verdict in [
            Verdict::NoReply,
            Verdict::Partial { covered: 1, sent: 2 },
            Verdict::Reset { after: 0 },
            Verdict::Reset { after: 5 },
            Verdict::TimedOut { after: 5 },
            Verdict::Failed {
                after: 0,
                error: "x".into(),
            },
            Verdict::NotAReversal { got: 3, sent: 3 },
        ] {
            assert_eq!(verdict.exit_status(), 3, "{verdict:?}");
        }
    }

    #[test]
    fn each_case_explains_itself_in_one_line() {
        let explain = |verdict: Verdict| verdict.explain(&context(false)).expect("an explanation");
        assert_eq!(Verdict::Whole.explain(&context(false)), None);
        assert_eq!(
            explain(Verdict::NoReply),
            "the server closed without a reply \
             (see its log: over --max-message, a per-address limit, a timeout)"
        );
        assert_eq!(
            explain(Verdict::Partial {
                covered: 16_384,
                sent: 204_800
            }),
            "the reply covers the first 16384 of 204800 bytes \
             (burst framing takes what has arrived; try the server's --framing eof)"
        );
        assert_eq!(
            explain(Verdict::Reset { after: 3_919_872 }),
            "the connection was reset after 3919872 reply bytes"
        );
        assert_eq!(
            explain(Verdict::TimedOut { after: 3_919_872 }),
            "timed out after 3919872 reply bytes from 127.0.0.1:7342 within 10s"
        );
        assert_eq!(
            explain(Verdict::TimedOut { after: 0 }),
            "no reply from 127.0.0.1:7342 within 10s"
        );
        assert!(
            explain(Verdict::NotAReversal { got: 5, sent: 3 })
                .starts_with("the reply is not the message reversed")
        );
        for verdict in [
            Verdict::NoReply,
            Verdict::Reset { after: 0 },
            Verdict::TimedOut { after: 7 },
            Verdict::NotAReversal { got: 1, sent: 1 },
        ] {
            assert!(!explain(verdict.clone()).contains('\n'), "{verdict:?}");
        }
    }

    #[test]
    fn counts_of_one_are_singular() {
        let explain = |verdict: Verdict| verdict.explain(&context(false)).expect("an explanation");
        assert_eq!(
            explain(Verdict::Reset { after: 1 }),
            "the connection was reset after 1 reply byte"
        );
        assert!(explain(Verdict::TimedOut { after: 1 }).starts_with("timed out after 1 reply byte from"));
        assert!(explain(Verdict::NotAReversal { got: 1, sent: 1 }).contains("(1 byte back, 1 byte sent)"));
        assert!(!explain(Verdict::Partial { covered: 1, sent: 2 }).contains("1 bytes"));
    }

    #[test]
    fn a_keep_open_timeout_says_the_server_may_wait_for_the_end_of_the_message() {
        for after in [0, 7] {
            let line = Verdict::TimedOut { after }
                .explain(&context(true))
                .expect("an explanation");
            assert!(
                line.ends_with(
                    "; the server may be waiting for the end of the message, \
                     which eof and line framing need (try without --keep-open)"
                ),
                "{line}"
            );
        }
    }
}
