//! The load: one thread, one mio `Poll`, `--concurrency` slots, each
//! running one connection after another.
//!
//! Each turn of the loop fires the timeouts that are due, starts connections
//! in the free slots (closed loop: at once; open loop: when the next planned
//! start is due), waits in `poll` until the next event or the next thing
//! due, and drives each ready connection. New connections start only after a
//! batch of events is handled, so a reused slot never sees an event meant
//! for the connection it held before.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::bench::cpu;
use crate::bench::exchange::Exchange;
use crate::bench::progress::Progress;
use crate::bench::slot::{ErrorKind, Outcome, Slot};
use crate::bench::tally::Tally;

/// When the measured part of a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// Start connections for this long; the ones in flight then still count.
    Duration(Duration),
    /// Start exactly this many connections.
    Requests(u64),
}

/// What to run.
#[derive(Debug)]
pub struct Plan {
    /// Where to connect.
    pub address: SocketAddr,
    /// Connections in flight at most.
    pub concurrency: usize,
    /// The measured part's bound.
    pub limit: Limit,
    /// The unmeasured run before it.
    pub warmup: Duration,
    /// How long one connection may take before it counts as a timeout.
    pub timeout: Duration,
    /// Open loop: connections started per second.
    pub rate: Option<u64>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// Counters and latencies of the measured connections.
    pub tally: Tally,
    /// From the end of the warmup to the last measured connection's end.
    pub elapsed: Duration,
    /// The client's own CPU time over `elapsed`, where `/proc` tells.
    pub client_cpu: Option<Duration>,
}

/// Runs `plan`; an error means the loop itself failed (`poll`), not a connection.
pub fn run(plan: &Plan, exchange: &Exchange, progress: &Progress) -> io::Result<Measured> {
    Driver::new(plan, exchange)?.run(progress)
}

struct Driver<'run> {
    plan: &'run Plan,
    exchange: &'run Exchange,
    poll: Poll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Timeouts in start order, which is deadline order since every
    /// connection gets the same `--timeout`. An entry whose slot has since
    /// started another connection is stale and is dropped when reached.
    deadlines: VecDeque<(Instant, usize, Instant)>,
    measure_start: Instant,
    /// Measured connections started so far.
    measured_started: u64,
    /// Open loop: the planned start of the next connection.
    next_planned_start: Option<Instant>,
    /// Open loop: the time between two planned starts.
    start_interval: Duration,
    tally: Tally,
    /// When the last measured connection ended.
    last_end: Instant,
}

impl<'run> Driver<'run> {
    fn new(plan: &'run Plan, exchange: &'run Exchange) -> io::Result<Driver<'run>> {
        let now = Instant::now();
        let tally = Tally::new().map_err(io::Error::other)?;
        Ok(Driver {
            plan,
            exchange,
            poll: Poll::new()?,
            slots: (0..plan.concurrency)
                .map(|_| Slot::new(exchange.reply.len()))
                .collect(),
            free: (0..plan.concurrency).rev().collect(),
            deadlines: VecDeque::with_capacity(plan.concurrency * 2),
            measure_start: now + plan.warmup,
            measured_started: 0,
            next_planned_start: plan.rate.map(|_| now),
            start_interval: Duration::from_secs_f64(1.0 / plan.rate.unwrap_or(1).max(1) as f64)
                .max(Duration::from_nanos(1)),
            tally,
            last_end: now + plan.warmup,
        })
    }

    fn run(mut self, progress: &Progress) -> io::Result<Measured> {
        let mut events = Events::with_capacity(self.plan.concurrency.clamp(16, 1024));
        let mut cpu_at_start = None;
        let mut measuring = false;
        loop {
            let now = Instant::now();
            if !measuring && now >= self.measure_start {
                measuring = true;
                cpu_at_start = cpu::used();
            }
            self.fire_timeouts(now);
            self.start_connections(now);
            let in_flight = self.plan.concurrency - self.free.len();
            if in_flight == 0 && !self.may_start(now) {
                break;
            }
            progress.update(now, self.measure_start, &self.tally);
            let timeout = self
                .next_due(now, progress)
                .map(|due| due.saturating_duration_since(now));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let Token(index) = event.token();
                let Some(slot) = self.slots.get_mut(index) else {
                    continue;
                };
                if let Some((outcome, started)) = slot.on_event(event, self.exchange) {
                    self.free.push(index);
                    self.record(outcome, started, Instant::now());
                }
            }
        }
        progress.finish();
        let client_cpu = match (cpu_at_start, cpu::used()) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start)),
            _ => None,
        };
        let elapsed = self.last_end.saturating_duration_since(self.measure_start);
        Ok(Measured {
            tally: self.tally,
            elapsed,
            client_cpu,
        })
    }

    /// Whether a connection may start now (a free slot aside).
    fn may_start(&self, now: Instant) -> bool {
        let planned = self.next_planned_start.unwrap_or(now);
        if planned < self.measure_start {
            return true;
        }
        match self.plan.limit {
            Limit::Duration(duration) => planned < self.measure_start + duration,
            Limit::Requests(requests) => self.measured_started < requests,
        }
    }

    /// Starts connections in the free slots, one attempt per slot free on
    /// entry: a connect that fails at once (no route, out of ports) frees
    /// its slot again, and retrying it here would spin without end while
    /// `now` stands still. The loop retries on its next turn instead.
    fn start_connections(&mut self, now: Instant) {
        for _ in 0..self.free.len() {
            if !self.may_start(now) {
                return;
            }
            let started = match self.next_planned_start {
                Some(planned) if planned > now => return,
                Some(planned) => {
                    self.next_planned_start = Some(planned + self.start_interval);
                    planned
                }
                None => now,
            };
            if started >= self.measure_start {
                self.measured_started += 1;
            }
            let Some(index) = self.free.pop() else { return };
            let Some(slot) = self.slots.get_mut(index) else {
                return;
            };
            match slot.start(self.poll.registry(), Token(index), self.plan.address, started) {
                Ok(()) => self
                    .deadlines
                    .push_back((started + self.plan.timeout, index, started)),
                Err(kind) => {
                    self.free.push(index);
                    self.record(Outcome::Failed(kind), started, now);
                }
            }
        }
    }

    fn fire_timeouts(&mut self, now: Instant) {
        while let Some(&(deadline, index, started)) = self.deadlines.front() {
            let live = self.slots.get(index).and_then(Slot::started) == Some(started);
            if live && deadline > now {
                return;
            }
            self.deadlines.pop_front();
            if live && let Some(slot) = self.slots.get_mut(index) {
                slot.close();
                self.free.push(index);
                self.record(Outcome::Failed(ErrorKind::Timeout), started, now);
            }
        }
    }

    /// The next moment the loop must wake up without an event. Computed
    /// without allocating: this runs on every turn.
    fn next_due(&self, now: Instant, progress: &Progress) -> Option<Instant> {
        let mut due = self.deadlines.front().map(|&(deadline, _, _)| deadline);
        let mut consider = |moment: Option<Instant>| {
            due = match (due, moment) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if self.may_start(now) && !self.free.is_empty() {
            consider(Some(self.next_planned_start.unwrap_or(now)));
        }
        consider((now < self.measure_start).then_some(self.measure_start));
        if let Limit::Duration(duration) = self.plan.limit {
            let end = self.measure_start + duration;
            consider((now < end).then_some(end));
        }
        consider(progress.next_update());
        due
    }

    fn record(&mut self, outcome: Outcome, started: Instant, ended: Instant) {
        if started < self.measure_start {
            return; // warmup
        }
        self.tally
            .record(outcome, ended.saturating_duration_since(started));
        self.last_end = self.last_end.max(ended);
    }
}
