//! Spare buffers: large message buffers that a finished connection leaves
//! to the next one on the same loop thread.
//!
//! Why: a connection's message buffer grows with what the client sends and
//! is freed when the reply is written. For small messages the allocator
//! recycles that memory by itself. For large ones (a megabyte) glibc's
//! `malloc` gives the freed memory back to the kernel (it trims the top of
//! its heap), so the next large message gets fresh pages, and each fresh
//! page costs a page fault and the kernel zeroing it. Measured with
//! `benches/compare.sh` at 1 MiB eof framing, 8 clients: about 220 page
//! faults per connection, and 1.4 ms of server CPU per connection with them
//! against 0.8 ms without (see docs/benchmarks.md). Keeping a few large
//! buffers here removes both the faults and the copies of the buffer's
//! growth, whatever allocator the program runs with. Four were not enough
//! for eight clients (13 faults per connection were left); eight leave none.
//!
//! Bounded: only buffers of at least [`SMALLEST`] bytes are kept, at most
//! [`KEPT`] of them per thread, and no buffer is larger than a message the
//! configuration allows (`max_message` plus one byte, rounded up by the
//! `Vec`'s growth: 2 MiB with the defaults, so at most 16 MiB per loop
//! thread, and only after eight such messages were in flight at once).
//! A spare buffer is taken only once a message outgrows half of
//! [`SMALLEST`], so idle and small connections hold no more than before.
//!
//! One loop runs on one thread, so a thread-local store is the loop's own:
//! no lock, and nothing shared between workers.

use std::cell::RefCell;

/// Buffers smaller than this are left to the allocator, which reuses them
/// well by itself.
pub(crate) const SMALLEST: usize = 64 * 1024;

/// At most this many spare buffers wait on one thread.
pub(crate) const KEPT: usize = 8;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A spare buffer, emptied, that can hold `needed` bytes without growing,
/// if one is kept.
pub(crate) fn take(needed: usize) -> Option<Vec<u8>> {
    SPARE.with_borrow_mut(|spare| {
        let index = spare.iter().position(|buffer| buffer.capacity() >= needed)?;
        Some(spare.swap_remove(index))
    })
}

/// Keeps `buffer` for a later message if it is large and there is room;
/// drops it otherwise. Its contents are cleared, not zeroed: the next
/// message overwrites them as it arrives.
pub(crate) fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() < SMALLEST {
        return;
    }
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            buffer.clear();
            spare.push(buffer);
        }
    });
}

/// How many spare buffers this thread holds.
#[cfg(test)]
pub(crate) fn kept() -> usize {
    SPARE.with_borrow(|spare| spare.len())
}

/// Appends `bytes` to a message. When the message must grow past half of
/// [`SMALLEST`], it moves into a spare buffer if one fits, instead of
/// asking the allocator for fresh memory.
pub(crate) fn append(message: &mut Vec<u8>, bytes: &[u8]) {
    let needed = message.len() + bytes.len();
    if needed > message.capacity()
        && needed > SMALLEST / 2
        && let Some(mut spare) = take(needed)
    {
        spare.extend_from_slice(message);
        give_back(std::mem::replace(message, spare));
    }
    message.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_given_back_serves_the_next_large_message() {
        let first = Vec::with_capacity(SMALLEST * 4);
        let address = first.as_ptr();
        give_back(first);
        assert_eq!(kept(), 1);

        let mut message = Vec::new();
        append(&mut message, &[1; SMALLEST / 4]);
        assert_eq!(kept(), 1, "a small message leaves the spare buffer alone");
        append(&mut message, &[2; SMALLEST / 2]);
        assert_eq!(kept(), 0);
        assert_eq!(
            message.as_ptr(),
            address,
            "the message moved into the spare buffer"
        );
        assert_eq!(message.len(), SMALLEST / 4 + SMALLEST / 2);
        assert!(message[..SMALLEST / 4].iter().all(|&byte| byte == 1));
        assert!(message[SMALLEST / 4..].iter().all(|&byte| byte == 2));
    }

    #[test]
    fn small_buffers_are_not_kept_and_large_ones_only_up_to_the_bound() {
        give_back(Vec::with_capacity(SMALLEST - 1));
        assert_eq!(kept(), 0);
        for _ in 0..KEPT + 2 {
            give_back(Vec::with_capacity(SMALLEST));
        }
        assert_eq!(kept(), KEPT);
    }

    #[test]
    fn a_spare_buffer_too_small_for_the_message_stays_kept() {
        give_back(Vec::with_capacity(SMALLEST));
        assert!(take(SMALLEST + 1).is_none());
        assert_eq!(kept(), 1);
    }
}
