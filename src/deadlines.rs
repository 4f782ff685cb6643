//! `Deadlines`: which connection times out next, without a timer thread.
//!
//! The loop's only clock is the `Poll` timeout. Before each `poll` it asks
//! for the nearest deadline and sleeps at most until then; after waking it
//! pops every deadline that has passed. So two operations must be cheap with
//! ten thousand connections open: "what is the earliest deadline?" and
//! "this connection's deadline moved".
//!
//! The structure is a binary min-heap of `(deadline, token)` pairs in one
//! `Vec`, plus, for each slab key, where that connection's entry sits in the
//! heap. The earliest deadline is the heap's first entry, O(1); moving,
//! adding or removing one connection's deadline is a sift up or down the
//! heap, O(log n), found through its position without a search. Nothing
//! ever scans all connections. The token tells the loop whose deadline it
//! was, and the set answers what deadline a connection has (`get`), so the
//! connection need not remember it.
//!
//! Memory is why it is a heap: 16 bytes per entry in one array (the
//! deadline as nanoseconds after the set's epoch, and the token) plus 4 for
//! the position, against about 47 per entry in the B-tree set this replaced
//! (`BTreeSet<(Instant, Token)>`, whose nodes hold 11 keys and, filled in
//! deadline order, stay about half full), and the 16-byte copy of the
//! deadline each connection kept to find its entry again. See
//! docs/benchmarks.md, "Memory per idle connection".
//!
//! Alternatives, for the curious: a heap with lazy deletion avoids the
//! positions but grows with stale entries on every update; a hashed timing
//! wheel (as in the Linux kernel and Netty) makes every operation O(1) at
//! the price of coarse ticks. `cargo bench --bench deadlines` measures this
//! one.

use std::time::{Duration, Instant};

use mio::Token;

use crate::token;

/// No entry: the value of `positions` for a key without a deadline.
const ABSENT: u32 = u32::MAX;

/// Pending deadlines, earliest first.
#[derive(Debug)]
pub struct Deadlines {
    /// What the heap's times count from: an hour before the set was made,
    /// so that every deadline a server computes (now or later, plus a
    /// timeout) lies after it.
    epoch: Instant,
    /// A binary min-heap of (nanoseconds after `epoch`, token): every entry
    /// is no later than its two children, at `2i + 1` and `2i + 2`. A `u64`
    /// is half an `Instant` and compares in one instruction.
    heap: Vec<(u64, Token)>,
    /// By slab key: the index of that connection's entry in `heap`, or
    /// [`ABSENT`]. `u32` is enough: keys and so entries are fewer than
    /// [`MAX_CONNECTIONS`](crate::MAX_CONNECTIONS).
    positions: Vec<u32>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self::new()
    }
}

impl Deadlines {
    /// An empty set.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty set with room for `connections` deadlines, keyed `0..connections`.
    pub fn with_capacity(connections: usize) -> Self {
        let now = Instant::now();
        Deadlines {
            epoch: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            heap: Vec::with_capacity(connections),
            positions: Vec::with_capacity(connections),
        }
    }

    /// `deadline` as the heap keeps it. One earlier than the epoch (not
    /// one a server makes) counts as the epoch: it is due anyway.
    fn nanos(&self, deadline: Instant) -> u64 {
        let since = deadline.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Sets `token`'s deadline to `deadline`, or removes it with `None`.
    /// Nothing moves when it is unchanged.
    pub fn set(&mut self, token: Token, deadline: Option<Instant>) {
        let key = token::key(token);
        let deadline = deadline.map(|deadline| self.nanos(deadline));
        match (self.position(key), deadline) {
            (None, None) => {}
            (None, Some(deadline)) => {
                if self.positions.len() <= key {
                    self.positions.resize(key + 1, ABSENT);
                }
                self.heap.push((deadline, token));
                self.sift_up(self.heap.len() - 1);
            }
            (Some(index), Some(deadline)) => {
                if self.heap[index] == (deadline, token) {
                    return;
                }
                self.heap[index] = (deadline, token);
                let index = self.sift_up(index);
                self.sift_down(index);
            }
            (Some(index), None) => {
                self.remove_at(index);
            }
        }
    }

    /// `token`'s deadline, if it has one.
    pub fn get(&self, token: Token) -> Option<Instant> {
        let index = self.position(token::key(token))?;
        let (deadline, owner) = self.heap[index];
        (owner == token).then(|| self.instant(deadline))
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|&(deadline, _)| self.instant(deadline))
    }

    /// Removes and returns one token whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Token> {
        let now = self.nanos(now);
        match self.heap.first() {
            Some(&(deadline, token)) if deadline <= now => {
                self.remove_at(0);
                Some(token)
            }
            _ => None,
        }
    }

    /// How many deadlines are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    fn position(&self, key: usize) -> Option<usize> {
        match self.positions.get(key) {
            Some(&index) if index != ABSENT => Some(index as usize),
            _ => None,
        }
    }

    /// Takes the entry at `index` out: the last entry fills the hole and
    /// sifts to its place.
    fn remove_at(&mut self, index: usize) {
        let (_, token) = self.heap.swap_remove(index);
        self.positions[token::key(token)] = ABSENT;
        if index < self.heap.len() {
            self.place(index);
            let index = self.sift_up(index);
            self.sift_down(index);
        }
    }

    /// Records where the entry at `index` now is.
    fn place(&mut self, index: usize) {
        let key = token::key(self.heap[index].1);
        // Fits: `heap` holds fewer entries than there are keys.
        self.positions[key] = u32::try_from(index).unwrap_or(ABSENT);
    }

    /// Moves the entry at `index` up while it is earlier than its parent;
    /// returns where it ended.
    fn sift_up(&mut self, mut index: usize) -> usize {
        while index > 0 {
            let parent = (index - 1) / 2;
            if self.heap[parent].0 <= self.heap[index].0 {
                break;
            }
            self.heap.swap(parent, index);
            self.place(index);
            index = parent;
        }
        self.place(index);
        index
    }

    /// Moves the entry at `index` down while a child is earlier.
    fn sift_down(&mut self, mut index: usize) {
        loop {
            let left = 2 * index + 1;
            let right = left + 1;
            let mut earliest = index;
            if left < self.heap.len() && self.heap[left].0 < self.heap[earliest].0 {
                earliest = left;
            }
            if right < self.heap.len() && self.heap[right].0 < self.heap[earliest].0 {
                earliest = right;
            }
            if earliest == index {
                break;
            }
            self.heap.swap(earliest, index);
            self.place(index);
            index = earliest;
        }
        self.place(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_comes_first_and_moves_with_set() {
        let start = Instant::now();
        let at = |ms| Some(start + Duration::from_millis(ms));
        let mut deadlines = Deadlines::new();
        deadlines.set(Token(1), at(30));
        deadlines.set(Token(2), at(10));
        deadlines.set(Token(3), at(20));
        assert_eq!(deadlines.next(), at(10));
        assert_eq!(deadlines.get(Token(1)), at(30));

        // Token 2 made progress: its deadline moves past the others.
        deadlines.set(Token(2), at(40));
        assert_eq!(deadlines.next(), at(20));
        assert_eq!(deadlines.get(Token(2)), at(40));
        assert_eq!(deadlines.len(), 3);

        let now = start + Duration::from_millis(30);
        assert_eq!(deadlines.pop_expired(now), Some(Token(3)));
        assert_eq!(deadlines.pop_expired(now), Some(Token(1)));
        assert_eq!(deadlines.pop_expired(now), None);
        assert_eq!(deadlines.get(Token(1)), None);

        deadlines.set(Token(2), None);
        assert!(deadlines.is_empty());
        assert_eq!(deadlines.get(Token(2)), None);
    }

    #[test]
    fn a_token_of_another_generation_on_the_same_key_has_no_deadline() {
        let start = Instant::now();
        let old = token::connection(5, 1);
        let mut deadlines = Deadlines::new();
        deadlines.set(old, Some(start));
        assert_eq!(deadlines.get(token::connection(5, 2)), None);
        assert_eq!(deadlines.get(old), Some(start));
    }

    /// Against a plain list, over many random moves: the heap hands out
    /// deadlines in order and finds every entry it holds.
    #[test]
    fn random_moves_keep_the_heap_in_order() {
        let start = Instant::now();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let mut deadlines = Deadlines::new();
        let mut model: Vec<Option<Instant>> = vec![None; 64];
        for _ in 0..5_000 {
            let key = random(64) as usize;
            let deadline = match random(4) {
                0 => None,
                _ => Some(start + Duration::from_millis(random(1_000))),
            };
            deadlines.set(Token(key), deadline);
            model[key] = deadline;
            if random(8) == 0 {
                let now = start + Duration::from_millis(random(1_000));
                while let Some(token) = deadlines.pop_expired(now) {
                    let expired = model[token.0].take();
                    assert!(expired.is_some_and(|deadline| deadline <= now));
                }
                assert!(model.iter().flatten().all(|&deadline| deadline > now));
            }
            assert_eq!(deadlines.next(), model.iter().flatten().min().copied());
            assert_eq!(deadlines.len(), model.iter().flatten().count());
            for (key, &deadline) in model.iter().enumerate() {
                assert_eq!(deadlines.get(Token(key)), deadline);
            }
        }
    }
}
