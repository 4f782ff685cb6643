//! `Workers`: one loop per core, for when one core is not enough.
//!
//! Each worker is a whole [`Server`]: its own thread, its own `Poll`, its
//! own listening sockets and connections. The workers share nothing on the
//! hot path. Two things are shared, and neither is touched while reading or
//! writing: the per-address counts of `max_connections_per_ip` (one map
//! behind a mutex, touched at accept and at close; see `server/per_ip.rs`),
//! and the coordinator, the thread that called [`Workers::run`], which owns
//! the signals and tells each worker through its stop handle, so that a
//! graceful shutdown takes the same path as with one loop.
//!
//! How the connections reach the workers:
//!
//! - Bound by us: every worker binds the same addresses with `SO_REUSEPORT`
//!   (the first binds, port 0 included; the others bind the ports it got),
//!   and the kernel picks a socket for each new connection by a hash of its
//!   addresses and ports. The hash does not look at how busy a worker is:
//!   one worker can be at its share of `max_connections` while another
//!   idles, and connections hashed to the full one wait in its backlog.
//! - Inherited (systemd's socket activation): there is one socket per
//!   address, so every worker registers its own duplicate of it. Each new
//!   connection then wakes every worker, and one of them wins the `accept`
//!   (the others get `WouldBlock`): a wasted wake-up per worker per
//!   connection, small for a handful of workers.
//!
//! With one worker, [`Workers`] is exactly a [`Server`] run on the calling
//! thread, signals included: no extra thread, no lock.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use log::{error, info};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::error::{describe, interrupted};
use crate::listeners::{self, Listener};
use crate::server::{PerAddress, PerIp, log_start, signal_name};
use crate::{Config, Exit, Server, Stats, StatsSnapshot, StopHandle};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);

/// `count` servers on one set of addresses, each on its own thread. Build
/// with [`Workers::bind`] or [`Workers::from_listeners`], then
/// [`run`](Workers::run).
pub struct Workers {
    servers: Vec<Server>,
    /// The addresses served (the first worker's; every worker has the same).
    addresses: Vec<SocketAddr>,
    /// Each worker's counters, kept after the servers move to their threads.
    stats: Vec<Arc<Stats>>,
    /// `max_connections` as given: the total, not a worker's share.
    config: Config,
    /// `None` with one worker: its server then is the coordinator.
    coordinator: Option<Coordinator>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.stats.len())
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// The thread that owns the signals when there are several workers.
struct Coordinator {
    poll: Poll,
    waker: Arc<Waker>,
    stop_requested: Arc<AtomicBool>,
    signals: Option<Signals>,
    on_shutdown: Option<Box<dyn FnOnce() + Send>>,
}

impl Workers {
    /// Binds `count` workers (at least 1) to `config.listen`.
    /// `config.max_connections` is the total: each worker gets its share,
    /// rounded up. `config.max_connections_per_ip` stays one limit for all.
    /// With several workers, every socket is bound with `SO_REUSEPORT`.
    pub fn bind(config: Config, count: usize) -> io::Result<Workers> {
        config.validate().map_err(invalid)?;
        if count <= 1 {
            return Workers::alone(Server::bind(config.clone())?, config);
        }
        let mut servers = Vec::with_capacity(count);
        let (share, per_ip) = shares(&config, count);
        let first = listeners::bind_all(&config.listen, config.backlog, true)?;
        let addresses: Vec<SocketAddr> = first.iter().map(|listener| listener.address).collect();
        servers.push(worker(&share, first, &per_ip)?);
        for _ in 1..count {
            let listeners = listeners::bind_each(&addresses, config.backlog)?;
            servers.push(worker(&share, listeners, &per_ip)?);
        }
        Workers::together(servers, config)
    }

    /// Serves sockets that are already listening (socket activation), as
    /// [`Server::from_listeners`] does, with `count` workers: each worker
    /// registers its own duplicate of every socket. `config.listen` and
    /// `config.backlog` are ignored.
    pub fn from_listeners(
        config: Config,
        count: usize,
        sockets: Vec<std::net::TcpListener>,
    ) -> io::Result<Workers> {
        config.validate_limits().map_err(invalid)?;
        if count <= 1 {
            return Workers::alone(Server::from_listeners(config.clone(), sockets)?, config);
        }
        let (share, per_ip) = shares(&config, count);
        let mut servers = Vec::with_capacity(count);
        for _ in 0..count {
            let listeners = sockets
                .iter()
                .map(|socket| socket.try_clone().and_then(listeners::adopt))
                .collect::<io::Result<Vec<Listener>>>()?;
            servers.push(worker(&share, listeners, &per_ip)?);
        }
        Workers::together(servers, config)
    }

    fn alone(server: Server, config: Config) -> io::Result<Workers> {
        Ok(Workers {
            addresses: server.local_addrs().to_vec(),
            stats: vec![server.stats()],
            servers: vec![server],
            config,
            coordinator: None,
        })
    }

    fn together(servers: Vec<Server>, config: Config) -> io::Result<Workers> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if config.handle_signals {
            let mut signals = Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(Workers {
            addresses: servers[0].local_addrs().to_vec(),
            stats: servers.iter().map(Server::stats).collect(),
            servers,
            config,
            coordinator: Some(Coordinator {
                poll,
                waker,
                stop_requested: Arc::new(AtomicBool::new(false)),
                signals,
                on_shutdown: None,
            }),
        })
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.stats.len()
    }

    /// The addresses served, with real ports where 0 was asked for.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Each worker's live counters, in worker order.
    pub fn stats(&self) -> Vec<Arc<Stats>> {
        self.stats.clone()
    }

    /// Every worker's counters added up.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.iter().map(|stats| stats.snapshot()).sum()
    }

    /// A handle that stops [`run`](Workers::run) gracefully from another
    /// thread: every worker stops taking clients and drains.
    pub fn stop_handle(&self) -> StopHandle {
        match &self.coordinator {
            None => self.servers[0].stop_handle(),
            Some(coordinator) => StopHandle {
                requested: Arc::clone(&coordinator.stop_requested),
                exit_now: Arc::new(AtomicI32::new(0)),
                waker: Arc::clone(&coordinator.waker),
            },
        }
    }

    /// Calls `hook` once, when shutdown begins (see [`Server::on_shutdown`]).
    pub fn on_shutdown(&mut self, hook: impl FnOnce() + Send + 'static) {
        match &mut self.coordinator {
            None => self.servers[0].on_shutdown(hook),
            Some(coordinator) => coordinator.on_shutdown = Some(Box::new(hook)),
        }
    }

    /// A way to ask every worker's loop to turn, and to see that it did:
    /// what a watchdog needs to tell a stuck loop from an idle one.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            workers: self
                .servers
                .iter()
                .map(|server| (server.stats(), server.waker()))
                .collect(),
        }
    }

    /// Serves until stopped (the stop handle, or a signal when
    /// `config.handle_signals`), then logs one summary of every worker's
    /// counts. A first signal drains every worker gracefully; a second one
    /// cuts every connection off and returns [`Exit::Signalled`]. If one
    /// worker fails (its `poll` failed, or it panicked), the others are
    /// stopped too, and the first failure is returned.
    pub fn run(mut self) -> io::Result<Exit> {
        let Some(coordinator) = self.coordinator.take() else {
            return self.servers[0].run();
        };
        log_start(&self.config, self.config.max_connections);
        let stops: Vec<StopHandle> = self.servers.iter().map(Server::stop_handle).collect();
        let ended = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::with_capacity(self.servers.len());
        for (index, server) in self.servers.drain(..).enumerate() {
            let end = WakeOnEnd {
                ended: Arc::clone(&ended),
                coordinator: Arc::clone(&coordinator.waker),
            };
            let thread = thread::Builder::new()
                .name(format!("revecho-worker-{}", index + 1))
                .spawn(move || run_worker(server, end));
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // The ones already started must not be left running.
                    stop_all(&stops);
                    join_all(threads);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot start a worker: {}", describe(&e)),
                    ));
                }
            }
        }
        let coordinated = coordinator.coordinate(&ended, &stops);
        let exits = join_all(threads);
        info!("summary: {}", self.snapshot());
        coordinated?;
        let mut outcome = Ok(Exit::Finished);
        for exit in exits {
            match (exit, &outcome) {
                (Err(e), Ok(_)) => outcome = Err(e),
                (Ok(Exit::Signalled(signal)), Ok(Exit::Finished)) => outcome = Ok(Exit::Signalled(signal)),
                _ => {}
            }
        }
        outcome
    }
}

impl Coordinator {
    /// Waits for signals, the stop handle and the workers' ends, until
    /// every worker has ended.
    fn coordinate(mut self, ended: &AtomicUsize, stops: &[StopHandle]) -> io::Result<()> {
        let mut events = Events::with_capacity(8);
        let mut shutting_down = false;
        loop {
            // Counted by the workers themselves, before they wake this
            // loop: `JoinHandle::is_finished` could still say no just after
            // the wake-up, and the loop would then sleep for ever.
            let ended = ended.load(Ordering::SeqCst);
            if ended == stops.len() {
                return Ok(());
            }
            // A worker that ended on its own failed: the rest stop too.
            if !shutting_down && ended > 0 {
                error!("a worker stopped; stopping the others");
                shutting_down = true;
                stop_all(stops);
            }
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    error!("poll failed: {e}");
                    stop_all(stops);
                    return Err(io::Error::new(e.kind(), format!("poll failed: {}", describe(&e))));
                }
            }
            for event in events.iter() {
                if event.token() == SIGNALS {
                    let pending: Vec<i32> = self
                        .signals
                        .as_mut()
                        .map(|s| s.pending().collect())
                        .unwrap_or_default();
                    for signal in pending {
                        if shutting_down {
                            for stop in stops {
                                let _ = stop.exit_now(signal);
                            }
                        } else {
                            shutting_down = true;
                            self.begin_shutdown(signal_name(signal), stops);
                        }
                    }
                } else if event.token() == WAKER
                    && self.stop_requested.load(Ordering::SeqCst)
                    && !shutting_down
                {
                    shutting_down = true;
                    self.begin_shutdown("stop requested", stops);
                }
            }
        }
    }

    fn begin_shutdown(&mut self, why: &str, stops: &[StopHandle]) {
        info!("{why}: shutting down {} workers", stops.len());
        if let Some(hook) = self.on_shutdown.take() {
            hook();
        }
        stop_all(stops);
    }
}

/// Asks every worker to shut down gracefully. A worker whose waker fails
/// has a broken poll, and its own loop reports that.
fn stop_all(stops: &[StopHandle]) {
    for stop in stops {
        let _ = stop.stop();
    }
}

/// Counts a worker's end and wakes the coordinator, however the worker
/// ends: a drop runs on a panic too.
struct WakeOnEnd {
    ended: Arc<AtomicUsize>,
    coordinator: Arc<Waker>,
}

impl Drop for WakeOnEnd {
    fn drop(&mut self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
        let _ = self.coordinator.wake();
    }
}

/// Runs one worker; `_end` tells the coordinator when it is over.
fn run_worker(mut server: Server, _end: WakeOnEnd) -> io::Result<Exit> {
    server.run()
}

/// Waits for every worker; a panic becomes an error.
fn join_all(threads: Vec<JoinHandle<io::Result<Exit>>>) -> Vec<io::Result<Exit>> {
    threads
        .into_iter()
        .enumerate()
        .map(|(index, thread)| {
            thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other(format!("worker {} panicked", index + 1))))
        })
        .collect()
}

/// The configuration each worker runs with, and the per-address counts
/// they share.
fn shares(config: &Config, count: usize) -> (Config, Arc<Mutex<PerAddress>>) {
    let share = Config {
        max_connections: config.max_connections.div_ceil(count),
        // The coordinator owns the signals.
        handle_signals: false,
        ..config.clone()
    };
    (share, PerIp::shared(config.max_connections_per_ip))
}

fn worker(share: &Config, listeners: Vec<Listener>, per_ip: &Arc<Mutex<PerAddress>>) -> io::Result<Server> {
    let server = Server::assemble(share.clone(), listeners, PerIp::Shared(Arc::clone(per_ip)))?;
    Ok(server.into_worker())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, message)
}

/// Asks each worker's loop to turn, and counts the turns: see
/// [`Workers::heartbeat`]. An idle loop sleeps in `poll` until its next
/// deadline, possibly forever, so "has not turned" alone cannot tell a
/// stuck loop from an idle one; a loop that does not turn after being
/// woken is stuck. Cheap to clone, and usable from any thread.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    workers: Vec<(Arc<Stats>, Arc<Waker>)>,
}

impl Heartbeat {
    /// Each worker's count of loop turns (its `poll_wakeups`), in worker
    /// order. The counts only grow.
    pub fn turns(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|(stats, _)| stats.snapshot().poll_wakeups)
            .collect()
    }

    /// Wakes every worker's loop once. A loop that is not stuck turns, and
    /// its count in [`turns`](Self::turns) grows.
    pub fn request(&self) -> io::Result<()> {
        for (_, waker) in &self.workers {
            waker.wake()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    const PATIENCE: Duration = Duration::from_secs(30);

    fn config() -> Config {
        Config {
            listen: vec!["127.0.0.1:0".into()],
            ..Config::default()
        }
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    #[test]
    fn each_worker_gets_its_share_of_max_connections_rounded_up() {
        let workers = Workers::bind(
            Config {
                max_connections: 5,
                ..config()
            },
            2,
        )
        .expect("bind");
        assert_eq!(workers.count(), 2);
        for server in &workers.servers {
            assert_eq!(server.config().max_connections, 3);
            assert!(!server.config().handle_signals, "the coordinator owns them");
        }
    }

    #[test]
    fn idle_workers_answer_a_heartbeat_request() {
        let workers = Workers::bind(config(), 2).expect("bind");
        let heartbeat = workers.heartbeat();
        let stop = workers.stop_handle();
        let running = thread::spawn(move || workers.run());
        let before = heartbeat.turns();
        heartbeat.request().expect("wake");
        wait_until("every worker to turn", || {
            heartbeat
                .turns()
                .iter()
                .zip(&before)
                .all(|(now, then)| now > then)
        });
        stop.stop().expect("stop");
        assert_eq!(running.join().expect("join").expect("run"), Exit::Finished);
    }

    #[test]
    fn the_stop_handle_drains_every_worker() {
        let mut workers = Workers::bind(config(), 2).expect("bind");
        let address = workers.local_addrs()[0];
        let told = Arc::new(AtomicBool::new(false));
        let hook_told = Arc::clone(&told);
        workers.on_shutdown(move || hook_told.store(true, Ordering::SeqCst));
        let stop = workers.stop_handle();
        let running = thread::spawn(move || workers.run());
        let mut client = TcpStream::connect(address).expect("connect");
        client.set_read_timeout(Some(PATIENCE)).expect("timeout");
        client.write_all(b"abc").expect("write");
        client.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("reply");
        assert_eq!(reply, b"cba");
        stop.stop().expect("stop");
        assert_eq!(running.join().expect("join").expect("run"), Exit::Finished);
        assert!(told.load(Ordering::SeqCst), "the shutdown hook ran");
    }
}
