//! What every connection sends and must get back, computed once per run.
//!
//! Precomputing both sides keeps the steady state free of allocation: each
//! connection writes from the same request and compares against the same
//! expected reply.

use crate::cli::FramingArg;

/// Printable bytes for the message body: no newline, so line framing sees
/// exactly one line, and a reversal that is easy to read in a capture.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The request a connection sends and the reply it expects.
#[derive(Debug)]
pub struct Exchange {
    /// The bytes written, the line terminator included for line framing.
    pub request: Vec<u8>,
    /// The bytes the server must send back before its end of stream.
    pub reply: Vec<u8>,
    /// Eof framing: the server waits for our end of stream, so shut down
    /// the write side once the request is out.
    pub half_close: bool,
}

impl Exchange {
    /// The exchange for a message of `payload` bytes (at least 1) in `framing`.
    pub fn new(framing: FramingArg, payload: usize) -> Exchange {
        let body = |length: usize| -> Vec<u8> { ALPHABET.iter().copied().cycle().take(length).collect() };
        match framing {
            FramingArg::Burst | FramingArg::Eof => {
                let request = body(payload);
                let reply = request.iter().rev().copied().collect();
                Exchange {
                    request,
                    reply,
                    half_close: matches!(framing, FramingArg::Eof),
                }
            }
            FramingArg::Line => {
                // The line's content is reversed; its terminator stays last.
                let content = body(payload.saturating_sub(1));
                let mut request = content.clone();
                request.push(b'\n');
                let mut reply: Vec<u8> = content.into_iter().rev().collect();
                reply.push(b'\n');
                Exchange {
                    request,
                    reply,
                    half_close: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_and_eof_expect_the_exact_reversal() {
        let exchange = Exchange::new(FramingArg::Burst, 5);
        assert_eq!(exchange.request, b"abcde");
        assert_eq!(exchange.reply, b"edcba");
        assert!(!exchange.half_close);
        assert!(Exchange::new(FramingArg::Eof, 5).half_close);
    }

    #[test]
    fn line_framing_ends_the_request_with_its_newline_and_keeps_it_last_in_the_reply() {
        let exchange = Exchange::new(FramingArg::Line, 4);
        assert_eq!(exchange.request, b"abc\n");
        assert_eq!(exchange.reply, b"cba\n");
    }

    #[test]
    fn long_messages_cycle_the_alphabet() {
        let exchange = Exchange::new(FramingArg::Eof, 100);
        assert_eq!(exchange.request.len(), 100);
        assert_eq!(exchange.request[36], b'a');
    }
}
