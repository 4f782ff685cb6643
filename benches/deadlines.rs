// cargo bench --bench deadlines
//
//! What the loop's timer bookkeeping costs with many connections open.
//!
//! Before every `poll` the loop asks for the nearest deadline, after every
//! bit of progress it moves one connection's deadline, and after every
//! wakeup it pops the deadlines that have passed. Issue 3 asks that picking
//! the nearest deadline stay cheap with 10,000 connections open. This
//! measures `revecho::deadlines::Deadlines` (an indexed binary heap) side by
//! side with the naive structure it replaces: each connection keeps its
//! deadline in its slab slot, and finding the nearest one scans every slot.
//!
//! Each figure is the median over [`runs`] runs of the mean time per
//! operation within a run. No harness: `std::time::Instant` only.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::Token;
use revecho::deadlines::Deadlines;

/// Connections open: the default limit (10,000), a hundredth of it,
/// and ten times it, to show how each structure scales.
const SIZES: [usize; 3] = [100, 10_000, 100_000];

/// Runs per figure; the median is reported, so one descheduled run on a
/// shared machine does not move it.
fn runs() -> usize {
    if quick() { 3 } else { 11 }
}

/// Operations per run for the cheap operations (milliseconds per run).
fn cheap_ops() -> usize {
    if quick() { 1_000 } else { 100_000 }
}

/// Slots visited per run by the naive scans: a run of scans over `n` slots
/// does `scan_work() / n` of them, so a 100,000-slot run still ends quickly.
fn scan_work() -> usize {
    if quick() { 200_000 } else { 20_000_000 }
}

/// Set when the binary runs without `--bench`, as under `cargo test
/// --benches`: every loop shrinks, so the run only shows that the bench works.
static QUICK: AtomicBool = AtomicBool::new(false);

fn quick() -> bool {
    QUICK.load(Ordering::Relaxed)
}

/// Reproducible pseudo-random numbers without a dependency (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// The structure `Deadlines` replaces: each connection's deadline lives in
/// its slot, as `Client::deadline` does in the server's slab. Moving a
/// deadline is one store; finding the nearest one is a scan of every slot.
struct LinearScan {
    slots: Vec<Option<Instant>>,
}

impl LinearScan {
    fn reschedule(&mut self, token: Token, new: Option<Instant>) {
        self.slots[token.0] = new;
    }

    fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// One scan per wakeup that takes every deadline at or before `now`.
    fn pop_expired(&mut self, now: Instant, expired: &mut Vec<Token>) {
        for (key, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some_and(|deadline| deadline <= now) {
                *slot = None;
                expired.push(Token(key));
            }
        }
    }
}

/// `n` connections with deadlines spread over `n` milliseconds after `base`,
/// in random order, held in both structures.
struct Fixture {
    base: Instant,
    /// What each connection remembers it scheduled (the server's `Client::deadline`).
    scheduled: Vec<Option<Instant>>,
    deadlines: Deadlines,
    naive: LinearScan,
}

impl Fixture {
    fn new(n: usize, random: &mut Random) -> Fixture {
        let base = Instant::now();
        let scheduled: Vec<Option<Instant>> = (0..n)
            .map(|_| Some(base + Duration::from_micros(random.below(n * 1000) as u64)))
            .collect();
        let mut deadlines = Deadlines::new();
        for (key, &deadline) in scheduled.iter().enumerate() {
            deadlines.set(Token(key), deadline);
        }
        assert_eq!(deadlines.len(), n, "every connection has a deadline");
        let naive = LinearScan {
            slots: scheduled.clone(),
        };
        Fixture {
            base,
            scheduled,
            deadlines,
            naive,
        }
    }

    /// The instant a connection making progress now would be given: later
    /// than every deadline in the fixture, like a fresh idle timeout.
    fn later(&self, step: usize) -> Option<Instant> {
        Some(self.base + Duration::from_secs(1_000) + Duration::from_micros(step as u64))
    }
}

/// The median of [`runs`] runs of `run`, which returns (time taken, operations done).
fn median_ns_per_op(mut run: impl FnMut() -> (Duration, usize)) -> f64 {
    let mut per_op: Vec<f64> = (0..runs())
        .map(|_| {
            let (elapsed, ops) = run();
            assert!(ops > 0, "a run did no operation");
            elapsed.as_nanos() as f64 / ops as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op[per_op.len() / 2]
}

fn scans_per_run(n: usize) -> usize {
    (scan_work() / n).clamp(10, cheap_ops())
}

/// (a) `next()`: the nearest deadline, asked before every `poll`.
fn bench_next(n: usize) -> (f64, f64) {
    let mut random = Random(0x5eed_0001);
    let fixture = Fixture::new(n, &mut random);
    let expected = fixture.naive.next();
    assert_eq!(
        fixture.deadlines.next(),
        expected,
        "both structures agree on the nearest deadline"
    );

    let tree = median_ns_per_op(|| {
        let start = Instant::now();
        for _ in 0..cheap_ops() {
            black_box(black_box(&fixture.deadlines).next());
        }
        (start.elapsed(), cheap_ops())
    });
    let scans = scans_per_run(n);
    let naive = median_ns_per_op(|| {
        let start = Instant::now();
        for _ in 0..scans {
            black_box(black_box(&fixture.naive).next());
        }
        (start.elapsed(), scans)
    });
    (tree, naive)
}

/// (b) `reschedule` of one connection's deadline to a later time, done
/// after every read or write that moved bytes. With `then_next`, also ask
/// for the nearest deadline afterwards: one event followed by one `poll`.
fn bench_reschedule(n: usize, then_next: bool) -> (f64, f64) {
    let mut random = Random(0x5eed_0002);
    let mut fixture = Fixture::new(n, &mut random);
    // Which connection makes progress, decided before the clock starts.
    let picks: Vec<Token> = (0..cheap_ops()).map(|_| Token(random.below(n))).collect();
    let mut step = 0;

    let tree = median_ns_per_op(|| {
        let start = Instant::now();
        for &token in &picks {
            step += 1;
            let new = fixture.later(step);
            fixture.scheduled[token.0] = new;
            fixture.deadlines.set(token, new);
            if then_next {
                black_box(fixture.deadlines.next());
            }
        }
        (start.elapsed(), picks.len())
    });
    assert_eq!(
        fixture.deadlines.len(),
        n,
        "rescheduling keeps one deadline per connection"
    );

    let ops = if then_next { scans_per_run(n) } else { cheap_ops() };
    let naive = median_ns_per_op(|| {
        let start = Instant::now();
        for &token in &picks[..ops] {
            step += 1;
            let new = fixture.later(step);
            fixture.naive.reschedule(black_box(token), new);
            if then_next {
                black_box(fixture.naive.next());
            }
        }
        (start.elapsed(), ops)
    });
    (tree, naive)
}

/// (c) `pop_expired`: after a wakeup, take the deadlines that have passed.
/// Each simulated wakeup finds one deadline due (the usual case: timeouts
/// trickle in), so the figure is the cost of one wakeup's timer check.
fn bench_pop_expired(n: usize) -> (f64, f64) {
    let mut random = Random(0x5eed_0003);
    let tree = median_ns_per_op(|| {
        wakeups(
            n,
            cheap_ops().min(n.max(10_000)),
            &mut random,
            |fixture, now, expired| {
                while let Some(token) = fixture.deadlines.pop_expired(now) {
                    expired.push(token);
                }
            },
        )
    });
    let naive = median_ns_per_op(|| {
        wakeups(n, scans_per_run(n), &mut random, |fixture, now, expired| {
            fixture.naive.pop_expired(now, expired);
        })
    });
    (tree, naive)
}

/// Times `count` wakeups of `pop` over fixtures of `n` deadlines. Wakeup
/// times are the sorted deadlines in turn, so each wakeup finds the next one
/// due; a fixture is refilled (off the clock) when it runs out.
fn wakeups(
    n: usize,
    count: usize,
    random: &mut Random,
    mut pop: impl FnMut(&mut Fixture, Instant, &mut Vec<Token>),
) -> (Duration, usize) {
    let mut expired = Vec::with_capacity(16);
    let mut timed = Duration::ZERO;
    let mut done = 0;
    let mut popped = 0;
    while done < count {
        let mut fixture = Fixture::new(n, random);
        let mut times: Vec<Instant> = fixture.scheduled.iter().flatten().copied().collect();
        times.sort_unstable();
        times.truncate(count - done);
        let start = Instant::now();
        for &now in &times {
            expired.clear();
            pop(&mut fixture, now, &mut expired);
            popped += expired.len();
        }
        timed += start.elapsed();
        done += times.len();
    }
    // Equal instants may fall due together; otherwise one per wakeup.
    assert!(popped >= done, "every wakeup popped a deadline");
    (timed, done)
}

/// How many times slower the scan is; below 1 the scan is faster.
fn ratio(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}x"),
        v if v >= 1.0 => format!("{v:.1}x"),
        v => format!("{v:.2}x"),
    }
}

fn main() {
    let started = Instant::now();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !std::env::args().any(|arg| arg == "--bench") {
        QUICK.store(true, Ordering::Relaxed);
        println!("quick check (not run by `cargo bench`): the figures below mean nothing\n");
    }
    println!("Deadlines (indexed heap) against a linear scan of every connection's slot.");
    println!("ns per operation, median of {} runs.\n", runs());
    println!(
        "| {:<34} | {:>7} | {:>13} | {:>17} | {:>13} |",
        "operation", "n", "heap ns/op", "linear scan ns/op", "scan / heap"
    );
    println!("|{:-<36}|{:->9}|{:->15}|{:->18}|{:->15}|", "", ":", ":", ":", ":");
    type Bench = fn(usize) -> (f64, f64);
    let operations: [(&str, Bench); 4] = [
        ("next() (nearest deadline)", bench_next),
        ("reschedule to a later deadline", |n| bench_reschedule(n, false)),
        ("reschedule, then next()", |n| bench_reschedule(n, true)),
        ("pop_expired (one due per wakeup)", bench_pop_expired),
    ];
    for (name, bench) in operations {
        for n in SIZES {
            let (tree, naive) = bench(n);
            println!(
                "| {name:<34} | {n:>7} | {tree:>13.1} | {naive:>17.1} | {:>13} |",
                ratio(naive / tree)
            );
        }
    }
    println!("\ntotal time: {:.1} s", started.elapsed().as_secs_f64());
}
