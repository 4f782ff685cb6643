//! `Deadlines`: which connection times out next, without a timer thread.
//!
//! The loop's only clock is the `Poll` timeout. Before each `poll` it asks
//! for the nearest deadline and sleeps at most until then; after waking it
//! pops every deadline that has passed. So two operations must be cheap with
//! ten thousand connections open: "what is the earliest deadline?" and
//! "this connection's deadline moved".
//!
//! The structure is an ordered set of `(deadline, token)` pairs (a B-tree).
//! The earliest deadline is its first entry, found in O(log n); moving a
//! deadline is one removal and one insertion, O(log n) each. Nothing ever
//! scans all connections. The token breaks ties between equal instants and
//! tells the loop whose deadline it was. Each connection remembers the
//! deadline it scheduled, which is how its old entry is found and removed.
//!
//! Alternatives, for the curious: a binary heap with lazy deletion avoids the
//! removal but grows with stale entries on every update; a hashed timing
//! wheel (as in the Linux kernel and Netty) makes every operation O(1) at the
//! price of coarse ticks. At our scale the B-tree is simple and fast enough:
//! `cargo bench --bench deadlines` measures it.

use std::collections::BTreeSet;
use std::time::Instant;

use mio::Token;

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines {
    queue: BTreeSet<(Instant, Token)>,
}

impl Deadlines {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves `token`'s deadline from `old` to `new` (either may be `None`).
    pub fn reschedule(&mut self, token: Token, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.queue.remove(&(old, token));
        }
        if let Some(new) = new {
            self.queue.insert((new, token));
        }
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|&(deadline, _)| deadline)
    }

    /// Removes and returns one token whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Token> {
        match self.queue.first() {
            Some(&(deadline, _)) if deadline <= now => self.queue.pop_first().map(|(_, token)| token),
            _ => None,
        }
    }

    /// How many deadlines are pending.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_comes_first_and_moves_with_reschedule() {
        let start = Instant::now();
        let at = |ms| Some(start + Duration::from_millis(ms));
        let mut deadlines = Deadlines::new();
        deadlines.reschedule(Token(1), None, at(30));
        deadlines.reschedule(Token(2), None, at(10));
        deadlines.reschedule(Token(3), None, at(20));
        assert_eq!(deadlines.next(), at(10));

        // Token 2 made progress: its deadline moves past the others.
        deadlines.reschedule(Token(2), at(10), at(40));
        assert_eq!(deadlines.next(), at(20));
        assert_eq!(deadlines.len(), 3);

        let now = start + Duration::from_millis(30);
        assert_eq!(deadlines.pop_expired(now), Some(Token(3)));
        assert_eq!(deadlines.pop_expired(now), Some(Token(1)));
        assert_eq!(deadlines.pop_expired(now), None);

        deadlines.reschedule(Token(2), at(40), None);
        assert!(deadlines.is_empty());
    }
}
