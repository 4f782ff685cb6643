//! How a mio `Token` names what became ready.
//!
//! A connection's token carries two things: its slab key (where its state
//! lives) and a generation taken from its connection id. The generation is
//! what keeps a stale event away from a new connection:
//!
//! A single `poll` returns a batch of events, and the batch is a snapshot:
//! it may still hold an event for a connection that the loop has closed
//! since. The list of connections that yielded, too, carries tokens from one
//! iteration to the next. If a closed connection's slab slot was then given
//! to a new client, a token made of the key alone would hand the old event
//! (say a `read_closed`) or the old turn to the new client, which would then
//! be closed or read from for no reason. This was seen with mio 1.2.5 in a
//! loop that closed connections and accepted new ones while working through
//! a batch.
//!
//! The loop now admits new clients only in its accept step, after the batch
//! (see `crate::server`), which closes that particular route. The
//! generation stays, because it makes the guarantee local instead of
//! resting on the order of the loop's steps or on platform details (kqueue,
//! on macOS and the BSDs, reports reading and writing as separate events for
//! one socket): a stale token no longer equals the new client's, and the
//! loop drops it (`on_connection_ready` and `key_of` compare the two).
//!
//! Tokens whose generation bits are all ones are reserved for the loop's own
//! sources (the waker, signals, listeners), so they never collide with a
//! connection's.

use mio::Token;

/// Bits of the token that hold the slab key: half the word.
const KEY_BITS: u32 = usize::BITS / 2;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// All ones in the generation bits marks a reserved token.
const GENERATION_RESERVED: usize = usize::MAX >> KEY_BITS;

/// The most connections a token can tell apart (and so the largest
/// `max_connections` a [`Config`](crate::Config) accepts).
pub const MAX_CONNECTIONS: usize = KEY_MASK - 1;

/// Wakes the loop from another thread (the stop handle).
pub(crate) const WAKER: Token = Token(usize::MAX);
/// The signal pipe, when the server handles signals.
pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);
/// The first listener; listener `i` is `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 2;

/// What a token refers to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Waker,
    Signals,
    Listener(usize),
    /// A connection: its slab key. Whether the generation still matches is
    /// for the caller to check against the connection stored there.
    Connection(usize),
}

/// The token of listener number `index`.
pub(crate) fn listener(index: usize) -> Token {
    Token(LISTENER_BASE - index)
}

/// The token of the connection with this slab key and id.
pub(crate) fn connection(key: usize, id: u64) -> Token {
    debug_assert!(key <= MAX_CONNECTIONS);
    let mut generation = (id as usize) & GENERATION_RESERVED;
    if generation == GENERATION_RESERVED {
        generation = 0;
    }
    Token((generation << KEY_BITS) | key)
}

/// The slab key in a connection's token (its generation left out).
pub(crate) fn key(token: Token) -> usize {
    token.0 & KEY_MASK
}

/// Reads a token back.
pub(crate) fn source(token: Token) -> Source {
    match token {
        WAKER => Source::Waker,
        SIGNALS => Source::Signals,
        Token(value) if value >> KEY_BITS == GENERATION_RESERVED => Source::Listener(LISTENER_BASE - value),
        Token(value) => Source::Connection(value & KEY_MASK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_round_trip_to_their_key() {
        for (key, id) in [(0, 0), (3, 1), (3, 2), (MAX_CONNECTIONS, u64::MAX)] {
            assert_eq!(source(connection(key, id)), Source::Connection(key));
        }
    }

    #[test]
    fn a_reused_slot_gets_a_different_token() {
        assert_ne!(connection(3, 7), connection(3, 8));
    }

    #[test]
    fn reserved_tokens_never_look_like_connections() {
        assert_eq!(source(WAKER), Source::Waker);
        assert_eq!(source(SIGNALS), Source::Signals);
        for index in [0, 1, 100] {
            assert_eq!(source(listener(index)), Source::Listener(index));
        }
        // The one id whose generation would be all ones is mapped away.
        let id = GENERATION_RESERVED as u64;
        assert_eq!(source(connection(5, id)), Source::Connection(5));
    }
}
