//! Where a message ends, and what its reply is. Pure functions on bytes: no
//! sockets, no state, so they are tested exhaustively on their own.

use crate::Framing;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Not a whole message yet: keep reading.
    Incomplete,
    /// The first `len` bytes are the message; anything after them is not
    /// part of it.
    Complete {
        /// The message's length, terminator included.
        len: usize,
    },
    /// More than `max_message` bytes without a complete message.
    Oversize,
}

/// Looks at `received` after more bytes arrived. `searched` is how much of
/// it an earlier call already searched for a newline, so a long line is
/// scanned once, not once per read.
pub fn scan(framing: Framing, received: &[u8], searched: usize, max_message: usize) -> Scan {
    if framing == Framing::Line
        && let Some(offset) = received[searched..].iter().position(|&byte| byte == b'\n')
    {
        let len = searched + offset + 1;
        // The terminator counts towards the limit.
        return if len > max_message {
            Scan::Oversize
        } else {
            Scan::Complete { len }
        };
    }
    // Burst ends at WouldBlock and eof at end of stream: neither can be
    // seen in the bytes themselves.
    if received.len() > max_message {
        Scan::Oversize
    } else {
        Scan::Incomplete
    }
}

/// Turns a message into its reply, in place: the bytes reversed, like the
/// seed's `bytes(reversed(data))`. In line framing the terminator (`\n` or
/// `\r\n`) stays at the end, so a terminal user gets a proper line back.
pub fn into_reply(framing: Framing, mut message: Vec<u8>) -> Vec<u8> {
    let terminator_len = match framing {
        Framing::Line if message.ends_with(b"\r\n") => 2,
        Framing::Line if message.ends_with(b"\n") => 1,
        _ => 0,
    };
    let content_len = message.len() - terminator_len;
    message[..content_len].reverse();
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_and_eof_reverse_every_byte() {
        assert_eq!(
            into_reply(Framing::Burst, b"Hello, world!".to_vec()),
            b"!dlrow ,olleH"
        );
        assert_eq!(into_reply(Framing::Eof, b"ab\n".to_vec()), b"\nba");
    }

    #[test]
    fn line_keeps_its_terminator_at_the_end() {
        assert_eq!(into_reply(Framing::Line, b"abc\n".to_vec()), b"cba\n");
        assert_eq!(into_reply(Framing::Line, b"abc\r\n".to_vec()), b"cba\r\n");
        assert_eq!(into_reply(Framing::Line, b"abc".to_vec()), b"cba");
        assert_eq!(into_reply(Framing::Line, b"\n".to_vec()), b"\n");
    }

    #[test]
    fn a_line_is_complete_at_its_first_newline() {
        assert_eq!(
            scan(Framing::Line, b"ab\ncd\n", 0, 100),
            Scan::Complete { len: 3 }
        );
        assert_eq!(scan(Framing::Line, b"abcd", 0, 100), Scan::Incomplete);
        // Only the part after `searched` is looked at again.
        assert_eq!(scan(Framing::Line, b"abcd\n", 4, 100), Scan::Complete { len: 5 });
    }

    #[test]
    fn the_terminator_counts_towards_the_limit() {
        assert_eq!(scan(Framing::Line, b"abc\n", 0, 4), Scan::Complete { len: 4 });
        assert_eq!(scan(Framing::Line, b"abc\n", 0, 3), Scan::Oversize);
        assert_eq!(scan(Framing::Line, b"abcd", 0, 3), Scan::Oversize);
        assert_eq!(scan(Framing::Line, b"abc", 0, 3), Scan::Incomplete);
    }

    #[test]
    fn burst_and_eof_are_oversize_only_past_the_limit() {
        for framing in [Framing::Burst, Framing::Eof] {
            assert_eq!(scan(framing, b"abc", 0, 3), Scan::Incomplete);
            assert_eq!(scan(framing, b"abcd", 0, 3), Scan::Oversize);
            assert_eq!(scan(framing, b"a\nb", 0, 3), Scan::Incomplete);
        }
    }

    proptest! {
        #[test]
        fn burst_and_eof_replies_are_the_exact_reversal(message in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut expected = message.clone();
            expected.reverse();
            for framing in [Framing::Burst, Framing::Eof] {
                prop_assert_eq!(into_reply(framing, message.clone()), expected.clone());
            }
        }

        #[test]
        fn a_line_reply_is_its_content_reversed_then_its_terminator(
            content in proptest::collection::vec(any::<u8>().prop_filter("no newline", |&b| b != b'\n'), 0..256),
            terminator in prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..])],
        ) {
            // A content ending in \r followed by \n is the \r\n terminator.
            prop_assume!(!content.ends_with(b"\r"));
            let mut line = content.clone();
            line.extend_from_slice(terminator);
            let mut expected = content.clone();
            expected.reverse();
            expected.extend_from_slice(terminator);
            prop_assert_eq!(into_reply(Framing::Line, line), expected);
        }

        #[test]
        fn scanning_in_pieces_finds_the_same_line_end(
            line in proptest::collection::vec(any::<u8>(), 0..200),
            split in 0usize..200,
        ) {
            let whole = scan(Framing::Line, &line, 0, usize::MAX);
            let split = split.min(line.len());
            let first = scan(Framing::Line, &line[..split], 0, usize::MAX);
            let pieces = match first {
                Scan::Incomplete => scan(Framing::Line, &line, split, usize::MAX),
                done => done,
            };
            prop_assert_eq!(whole, pieces);
        }
    }
}
