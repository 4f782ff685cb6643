//! The acceptor's decisions against scripted listeners: which listener is
//! asked when, when a step ends, and which state it leaves behind.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Instant;

use super::*;

/// A listener whose backlog is a script: each `accept` takes the next
/// entry, and an empty script is an empty backlog (`WouldBlock`).
#[derive(Debug)]
struct FakeListener {
    address: SocketAddr,
    script: VecDeque<io::Result<&'static str>>,
    calls: usize,
}

impl FakeListener {
    fn with_clients(port: u16, clients: &[&'static str]) -> Self {
        FakeListener {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            script: clients.iter().map(|&client| Ok(client)).collect(),
            calls: 0,
        }
    }
}

impl Listen for FakeListener {
    type Stream = &'static str;

    fn accept(&mut self) -> io::Result<(&'static str, SocketAddr)> {
        self.calls += 1;
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        match self.script.pop_front() {
            Some(result) => result.map(|client| (client, peer)),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }

    fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The loop's side of a step: a table of `capacity` slots.
struct Table {
    capacity: usize,
    held: usize,
    /// Every client admitted, in order.
    admitted: Vec<&'static str>,
}

impl Table {
    fn new(capacity: usize) -> Self {
        Table {
            capacity,
            held: 0,
            admitted: Vec::new(),
        }
    }

    /// Runs one step, if due, the way `Server::accept_step` does.
    fn step(&mut self, acceptor: &mut Acceptor<FakeListener>, now: Instant, lines: &mut ClientLines) {
        let stats = Stats::default();
        let Some(mut step) = acceptor.begin(now) else {
            return;
        };
        while let Some((client, _)) = acceptor.next(&mut step, self.held < self.capacity, now, lines, &stats)
        {
            self.held += 1;
            self.admitted.push(client);
        }
    }

    /// A connection closed.
    fn free_one(&mut self, acceptor: &mut Acceptor<FakeListener>) {
        self.held -= 1;
        acceptor.on_slot_freed();
    }
}

fn acceptor(listeners: Vec<FakeListener>) -> Acceptor<FakeListener> {
    Acceptor::new(listeners, 2)
}

const IDLE: State = State::Open {
    due: false,
    recovering: None,
};

#[test]
fn nothing_is_accepted_until_a_listener_is_ready() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![FakeListener::with_clients(1, &["a"])]);
    let mut table = Table::new(10);
    table.step(&mut acceptor, now, &mut lines);
    assert!(table.admitted.is_empty());
    assert_eq!(acceptor.listeners[0].calls, 0, "no system call without readiness");
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a"]);
}

#[test]
fn a_step_drains_every_listener_to_would_block() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![
        FakeListener::with_clients(1, &["a1", "a2", "a3"]),
        FakeListener::with_clients(2, &["b1", "b2"]),
    ]);
    let mut table = Table::new(10);
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a1", "a2", "a3", "b1", "b2"]);
    // Each listener was asked once more than it had clients: the WouldBlock.
    assert_eq!(acceptor.listeners[0].calls, 4);
    assert_eq!(acceptor.listeners[1].calls, 3);
    assert_eq!(acceptor.state(), IDLE);
}

#[test]
fn interrupted_is_retried_and_a_client_that_went_away_is_skipped() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut listener = FakeListener::with_clients(1, &[]);
    listener.script = VecDeque::from([
        Err(ErrorKind::Interrupted.into()),
        Ok("a"),
        Err(ErrorKind::ConnectionAborted.into()),
        Ok("b"),
    ]);
    let mut acceptor = acceptor(vec![listener]);
    let mut table = Table::new(10);
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a", "b"]);
}

#[test]
fn a_full_table_stops_the_step_and_a_freed_slot_makes_accepting_due() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![FakeListener::with_clients(1, &["a", "b", "c"])]);
    let mut table = Table::new(2);
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a", "b"]);
    assert_eq!(
        acceptor.state(),
        State::AtCapacity {
            clients_waiting: false
        }
    );
    // At capacity, a listener event is a client known to be waiting, but
    // it does not make a step due: there is no room.
    acceptor.on_listener_ready(0, now, &mut lines);
    assert_eq!(
        acceptor.state(),
        State::AtCapacity {
            clients_waiting: true
        }
    );
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a", "b"]);
    table.free_one(&mut acceptor);
    assert_eq!(
        acceptor.state(),
        State::Open {
            due: true,
            recovering: Some(Episode::LimitReached)
        }
    );
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(table.admitted, ["a", "b", "c"]);
    // The step filled the table again before it saw the backlog empty, so
    // clients may still wait: the episode goes on, unannounced.
    assert_eq!(
        acceptor.state(),
        State::AtCapacity {
            clients_waiting: true
        }
    );
    // Room, and the backlog is empty: the episode is over.
    table.free_one(&mut acceptor);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(acceptor.state(), IDLE);
}

#[test]
fn the_limit_warning_is_spent_only_when_a_client_waits() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![FakeListener::with_clients(1, &["a", "b"])]);
    let mut table = Table::new(2);
    // Filling the table with nobody behind warns nobody.
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    assert_eq!(lines.connection_limit.report_at(), None);
    let budget_left = (0..100).filter(|_| lines.connection_limit.allow(now)).count();
    assert_eq!(budget_left, 5, "no warning was logged");
}

#[test]
fn the_limit_warning_is_given_once_per_episode_when_a_client_waits() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![FakeListener::with_clients(1, &["a", "b", "c"])]);
    let mut table = Table::new(2);
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, now, &mut lines);
    // Three more clients arrive while the table is full: one warning.
    for _ in 0..3 {
        acceptor.on_listener_ready(0, now, &mut lines);
    }
    let budget_left = (0..100).filter(|_| lines.connection_limit.allow(now)).count();
    assert_eq!(budget_left, 4, "exactly one warning was logged");
}

#[test]
fn each_step_starts_at_the_next_listener_so_none_starves() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut acceptor = acceptor(vec![
        FakeListener::with_clients(1, &["a1", "a2", "a3"]),
        FakeListener::with_clients(2, &["b1", "b2", "b3"]),
    ]);
    // Room for one client per step: steady pressure on both listeners.
    let mut table = Table::new(1);
    acceptor.on_listener_ready(0, now, &mut lines);
    acceptor.on_listener_ready(1, now, &mut lines);
    for _ in 0..4 {
        table.step(&mut acceptor, now, &mut lines);
        table.free_one(&mut acceptor);
    }
    assert_eq!(table.admitted, ["a1", "b1", "a2", "b2"]);
}

#[test]
fn a_failing_accept_backs_off_until_the_retry_time_then_recovers() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let mut listener = FakeListener::with_clients(1, &[]);
    listener.script = VecDeque::from([Err(io::Error::from_raw_os_error(libc::EMFILE)), Ok("a")]);
    let mut acceptor = acceptor(vec![listener]);
    let mut table = Table::new(10);
    let stats = Stats::default();
    acceptor.on_listener_ready(0, now, &mut lines);
    let mut step = acceptor.begin(now).expect("due");
    assert!(acceptor.next(&mut step, true, now, &mut lines, &stats).is_none());
    assert_eq!(stats.snapshot().accept_backoffs, 1);
    let retry_at = now + ACCEPT_BACKOFF;
    assert_eq!(acceptor.state(), State::BackingOff { retry_at });
    assert_eq!(acceptor.retry_at(), Some(retry_at));
    // More readiness does not cut the pause short.
    acceptor.on_listener_ready(0, now, &mut lines);
    table.step(&mut acceptor, retry_at - Duration::from_millis(1), &mut lines);
    assert_eq!(acceptor.listeners[0].calls, 1);
    table.step(&mut acceptor, retry_at, &mut lines);
    assert_eq!(table.admitted, ["a"]);
    assert_eq!(acceptor.state(), IDLE, "recovered: the episode is over");
}

#[test]
fn the_final_step_runs_whatever_the_state() {
    let now = Instant::now();
    let mut lines = ClientLines::new();
    let stats = Stats::default();
    let mut acceptor = acceptor(vec![FakeListener::with_clients(1, &["a", "b"])]);
    acceptor.state = State::BackingOff {
        retry_at: now + ACCEPT_BACKOFF,
    };
    let mut step = acceptor.begin_final();
    let mut admitted = Vec::new();
    while let Some((client, _)) = acceptor.next(&mut step, true, now, &mut lines, &stats) {
        admitted.push(client);
    }
    assert_eq!(admitted, ["a", "b"]);
}
