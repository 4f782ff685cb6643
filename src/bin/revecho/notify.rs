//! Telling systemd how the service is doing (`sd_notify`), without libsystemd.
//!
//! A unit with `Type=notify` starts the service with `NOTIFY_SOCKET` set to
//! the address of a Unix datagram socket. The service sends one datagram per
//! state change: `READY=1` once it is listening (until then, systemd holds
//! back the units ordered after it, and `systemctl start` waits),
//! `STOPPING=1` when it shuts down, and `WATCHDOG=1` regularly when the unit
//! sets `WatchdogSec=`: a service that stops pinging is considered hung and
//! restarted.
//!
//! The address is a file system path (`/run/systemd/notify`) or, when it
//! starts with `@`, a name in Linux's abstract socket namespace, which has
//! no file. The sd-notify crate fails on abstract names (it treats them as
//! paths: ENOENT), so this module builds the address itself with std's
//! `SocketAddrExt::from_abstract_name`: no unsafe, no dependency.
//!
//! The watchdog half is pure: [`watchdog_interval`] reads the two
//! environment values, and [`Watchdog`] decides whether a ping is honest.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use log::warn;
use revecho::Heartbeat;

/// How long a send may block when systemd's receive queue is full. systemd
/// reads its notify socket promptly; this only keeps a wedged manager from
/// hanging our start or shutdown forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the service manager's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for error messages.
    name: OsString,
}

impl Notifier {
    /// The notifier that `NOTIFY_SOCKET` asks for: `Ok(None)` when the
    /// variable is unset (not started by systemd, or not `Type=notify`).
    pub fn from_environment() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(name) => Notifier::new(&name).map(Some),
        }
    }

    /// A notifier for the socket `name`: an absolute path, or `@name` for an
    /// abstract socket.
    pub fn new(name: &OsStr) -> io::Result<Notifier> {
        let bytes = name.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(name),
            // The `@` stands for the leading NUL byte that marks an abstract
            // name in the kernel's address structure.
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={name:?} is neither an absolute path nor an @abstract name"),
                ));
            }
        };
        // Too long for the kernel's address structure (108 bytes).
        let address = address
            .map_err(|error| io::Error::new(error.kind(), format!("NOTIFY_SOCKET={name:?}: {error}")))?;
        // Unbound: systemd identifies the sender by its credentials (pid),
        // not by an address, so we need none.
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            socket,
            address,
            name: name.to_owned(),
        })
    }

    /// `READY=1`: start-up is finished and the listeners accept.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `WATCHDOG=1`: the service is alive. Send it only when [`Watchdog`]
    /// says so.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// One datagram: all or nothing, so there is no partial send to resume.
    fn send(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.address);
        sent.map(drop).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("sending {state} to NOTIFY_SOCKET={:?}: {error}", self.name),
            )
        })
    }
}

/// The service manager as the binary sees it: a [`Notifier`] when systemd
/// asked for notifications, nothing otherwise. Every problem is a warning,
/// not a failure: the server serves either way, and systemd reports a
/// missing `READY=1` itself (the start times out). Cheap to clone, so that
/// the shutdown hook and the watchdog thread each hold one.
#[derive(Clone)]
pub struct Systemd {
    notifier: Option<Arc<Notifier>>,
    /// Half of `WATCHDOG_USEC`, when systemd expects pings.
    watchdog_every: Option<Duration>,
    /// `STOPPING=1` goes once: when shutdown begins, or at exit if it never
    /// began (the loop failed).
    stopping_sent: Arc<AtomicBool>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_environment() -> Systemd {
        let notifier = Notifier::from_environment().unwrap_or_else(|error| {
            warn!("cannot notify systemd: {error}");
            None
        });
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        let watchdog_every = match watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(every) => every,
            Err(error) => {
                warn!("ignoring the systemd watchdog: {error}");
                None
            }
        };
        if watchdog_every.is_some() && notifier.is_none() {
            warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not: no WATCHDOG=1 can be sent");
        }
        Systemd {
            notifier: notifier.map(Arc::new),
            watchdog_every,
            stopping_sent: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends `READY=1`, if systemd listens.
    pub fn ready(&self) {
        self.tell(Notifier::ready);
    }

    /// Sends `STOPPING=1`, if systemd listens, the first time only.
    pub fn stopping(&self) {
        if !self.stopping_sent.swap(true, Ordering::SeqCst) {
            self.tell(Notifier::stopping);
        }
    }

    /// Starts pinging the watchdog, if systemd asked for it: a thread that
    /// every half interval pings when every loop has turned since the last
    /// ping, then asks each loop to turn again (see [`tick`]). It stops
    /// when the returned guard is dropped.
    pub fn start_watchdog(&self, heartbeat: Heartbeat) -> Option<WatchdogThread> {
        let every = self.watchdog_every?;
        let notifier = Arc::clone(self.notifier.as_ref()?);
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = thread::Builder::new()
            .name("revecho-watchdog".into())
            .spawn(move || {
                let mut watchdog = Watchdog::new(heartbeat.turns().len());
                // The timer: `recv_timeout` returns at each interval, or at
                // once when the guard drops the sender.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if tick(&mut watchdog, &heartbeat)
                        && let Err(error) = notifier.watchdog()
                    {
                        warn!("cannot notify systemd: {error}");
                    }
                }
            });
        match spawned {
            Ok(thread) => Some(WatchdogThread {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(error) => {
                warn!("cannot start the watchdog thread: {error}; systemd will restart revecho");
                None
            }
        }
    }

    fn tell(&self, send: fn(&Notifier) -> io::Result<()>) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = send(notifier)
        {
            warn!("cannot notify systemd: {error}");
        }
    }
}

/// The watchdog thread; dropping this stops and joins it.
pub struct WatchdogThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for WatchdogThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the watchdog needs from the loops: their turn counts, and a way to
/// ask each to turn. [`Heartbeat`] in the server; a fake in the tests.
pub trait Loops {
    /// Each loop's turn count.
    fn turns(&self) -> Vec<u64>;
    /// Wakes each loop once.
    fn request_turn(&self);
}

impl Loops for Heartbeat {
    fn turns(&self) -> Vec<u64> {
        Heartbeat::turns(self)
    }

    fn request_turn(&self) {
        if let Err(error) = self.request() {
            warn!("cannot wake a worker for the watchdog: {error}");
        }
    }
}

/// One watchdog period: says whether to ping now, then wakes every loop.
///
/// An idle loop sleeps in `poll` until its next deadline, possibly for
/// ever, so a loop that has not turned is not necessarily stuck. Hence the
/// request: each period wakes every loop, and the next period pings only if
/// every loop answered (turned) in between. A loop stuck in a handler
/// cannot answer, and the pings stop.
pub fn tick(watchdog: &mut Watchdog, loops: &impl Loops) -> bool {
    let ping = watchdog.should_ping(&loops.turns());
    loops.request_turn();
    ping
}

/// Why the watchdog variables could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogError {
    /// `WATCHDOG_USEC` is not a positive whole number of microseconds.
    BadInterval(String),
    /// `WATCHDOG_PID` is not a process id.
    BadPid(String),
}

impl fmt::Display for WatchdogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchdogError::BadInterval(value) => write!(
                formatter,
                "WATCHDOG_USEC={value:?} is not a positive number of microseconds"
            ),
            WatchdogError::BadPid(value) => {
                write!(formatter, "WATCHDOG_PID={value:?} is not a process id")
            }
        }
    }
}

/// How often to ping the watchdog, from the values of `WATCHDOG_USEC` and
/// `WATCHDOG_PID` (pass `std::env::var_os` of each) and our process id:
/// half the interval systemd gives, as `sd_watchdog_enabled(3)` advises, so
/// one late ping is not yet a missed one. `Ok(None)` when there is no
/// watchdog, or when `WATCHDOG_PID` names another process: the variables
/// were meant for a parent and leaked into our environment.
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Result<Option<Duration>, WatchdogError> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(pid) = pid {
        let text = pid.to_string_lossy();
        match parse_decimal(&text) {
            Some(pid) if pid > 0 => {
                if pid != u64::from(our_pid) {
                    return Ok(None);
                }
            }
            _ => return Err(WatchdogError::BadPid(text.into_owned())),
        }
    }
    let text = usec.to_string_lossy();
    match parse_decimal(&text) {
        Some(microseconds) if microseconds > 0 => Ok(Some(Duration::from_micros(microseconds / 2))),
        _ => Err(WatchdogError::BadInterval(text.into_owned())),
    }
}

/// Digits only (`u64::from_str` would also take a `+`).
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decides whether a watchdog ping is honest: only when every worker's loop
/// has turned since the last ping. A ping sent from a timer alone would
/// keep arriving while a loop is stuck, which is exactly what the watchdog
/// is there to catch; a stuck worker must stop the pings.
///
/// Each worker counts its loop turns (a number that only grows). Every
/// half interval, the caller passes the counts to [`Watchdog::should_ping`]
/// and sends `WATCHDOG=1` when it returns true. An idle loop must still
/// turn at least once per half interval (its poll timeout bounded by it, or
/// a wake-up: see [`tick`]), or a healthy but idle server would be
/// restarted.
#[derive(Debug)]
pub struct Watchdog {
    /// Each worker's turn count at the last ping (all zero before the
    /// first: a loop must turn once before the first ping).
    turns_at_last_ping: Vec<u64>,
}

impl Watchdog {
    /// A watchdog for `workers` loops, none of which has turned yet.
    pub fn new(workers: usize) -> Watchdog {
        Watchdog {
            turns_at_last_ping: vec![0; workers],
        }
    }

    /// Given each worker's turn count now, says whether to ping. A count
    /// list of the wrong length never pings: it means the caller lost
    /// track of a worker, and silence is the safe answer.
    pub fn should_ping(&mut self, turns: &[u64]) -> bool {
        let every_loop_turned = turns.len() == self.turns_at_last_ping.len()
            && turns
                .iter()
                .zip(&self.turns_at_last_ping)
                .all(|(now, then)| now != then);
        if every_loop_turned {
            self.turns_at_last_ping.copy_from_slice(turns);
        }
        every_loop_turned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A generous bound for a datagram that was already sent: a timeout
    /// means "never arrived", not "slow".
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A name unique to this process and call, so parallel tests (and
    /// parallel test runs) never share a socket.
    fn unique(label: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("revecho-notify-test-{}-{n}-{label}", std::process::id())
    }

    /// A directory removed on drop, for a socket file.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            let path = std::env::temp_dir().join(unique(label));
            std::fs::create_dir(&path).expect("create temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    #[test]
    fn sends_each_state_to_a_path_socket() {
        let directory = TempDir::new("path");
        let path = directory.0.join("notify");
        let manager = UnixDatagram::bind(&path).expect("bind manager socket");
        let notifier = Notifier::new(path.as_os_str()).expect("notifier");
        notifier.ready().expect("ready");
        assert_eq!(receive(&manager), "READY=1");
        notifier.watchdog().expect("watchdog");
        assert_eq!(receive(&manager), "WATCHDOG=1");
        notifier.stopping().expect("stopping");
        assert_eq!(receive(&manager), "STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = unique("abstract");
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let manager = UnixDatagram::bind_addr(&address).expect("bind abstract manager socket");
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).expect("notifier");
        notifier.ready().expect("ready");
        assert_eq!(receive(&manager), "READY=1");
        notifier.stopping().expect("stopping");
        assert_eq!(receive(&manager), "STOPPING=1");
    }

    #[test]
    fn an_abstract_name_is_not_a_path() {
        // A file at the path the name would mean if it were read as one:
        // the notification must not go there.
        let directory = TempDir::new("not-a-path");
        let path = directory.0.join("notify");
        let file_socket = UnixDatagram::bind(&path).expect("bind path socket");
        file_socket.set_nonblocking(true).expect("nonblocking");
        let name = format!("@{}", path.display());
        let address = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).expect("address");
        let abstract_socket = UnixDatagram::bind_addr(&address).expect("bind abstract socket");
        Notifier::new(OsStr::new(&name))
            .expect("notifier")
            .ready()
            .expect("ready");
        assert_eq!(receive(&abstract_socket), "READY=1");
        let mut buffer = [0u8; 16];
        let error = file_socket
            .recv(&mut buffer)
            .expect_err("nothing on the path socket");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_missing_socket_is_an_error_that_names_it() {
        let directory = TempDir::new("missing");
        let path = directory.0.join("nobody-listens");
        let notifier = Notifier::new(path.as_os_str()).expect("notifier");
        let error = notifier.ready().expect_err("no socket there");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error.to_string().contains("sending READY=1 to NOTIFY_SOCKET="),
            "{error}"
        );
        assert!(error.to_string().contains("nobody-listens"), "{error}");
    }

    #[test]
    fn a_relative_or_empty_name_is_refused() {
        for name in ["", "notify", "vsock:2:1234"] {
            let error = Notifier::new(OsStr::new(name)).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
            assert!(error.to_string().contains("absolute path"), "{error}");
        }
    }

    #[test]
    fn a_name_too_long_for_a_socket_address_is_refused_with_its_variable() {
        for name in [format!("/{}", "a".repeat(200)), format!("@{}", "a".repeat(200))] {
            let error = Notifier::new(OsStr::new(&name)).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name}");
            assert!(error.to_string().starts_with("NOTIFY_SOCKET=\""), "{error}");
        }
    }

    fn interval(
        usec: Option<&str>,
        pid: Option<&str>,
        our_pid: u32,
    ) -> Result<Option<Duration>, WatchdogError> {
        watchdog_interval(usec.map(OsStr::new), pid.map(OsStr::new), our_pid)
    }

    #[test]
    fn watchdog_pings_at_half_the_interval() {
        assert_eq!(
            interval(Some("30000000"), None, 7),
            Ok(Some(Duration::from_secs(15)))
        );
        assert_eq!(interval(Some("3"), None, 7), Ok(Some(Duration::from_micros(1))));
    }

    #[test]
    fn no_watchdog_without_watchdog_usec() {
        assert_eq!(interval(None, None, 7), Ok(None));
        assert_eq!(interval(None, Some("7"), 7), Ok(None));
    }

    #[test]
    fn watchdog_pid_must_be_ours() {
        assert_eq!(
            interval(Some("2000000"), Some("7"), 7),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(interval(Some("2000000"), Some("8"), 7), Ok(None));
    }

    #[test]
    fn bad_watchdog_values_are_errors() {
        for usec in ["", "0", "-1", "+5", "1s", "1e6", "18446744073709551616"] {
            assert_eq!(
                interval(Some(usec), None, 7),
                Err(WatchdogError::BadInterval(usec.to_owned())),
                "{usec:?}"
            );
        }
        for pid in ["", "0", "self", "-7"] {
            assert_eq!(
                interval(Some("1000"), Some(pid), 7),
                Err(WatchdogError::BadPid(pid.to_owned())),
                "{pid:?}"
            );
        }
        let error = interval(Some("0"), None, 7).unwrap_err();
        assert_eq!(
            error.to_string(),
            "WATCHDOG_USEC=\"0\" is not a positive number of microseconds"
        );
    }

    #[test]
    fn watchdog_waits_for_the_first_turn() {
        let mut watchdog = Watchdog::new(1);
        assert!(!watchdog.should_ping(&[0]));
        assert!(watchdog.should_ping(&[1]));
    }

    #[test]
    fn watchdog_pings_only_when_the_loop_turned_since_the_last_ping() {
        let mut watchdog = Watchdog::new(1);
        assert!(watchdog.should_ping(&[5]));
        assert!(!watchdog.should_ping(&[5]), "stuck loop");
        assert!(!watchdog.should_ping(&[5]), "still stuck");
        assert!(watchdog.should_ping(&[6]), "turned again");
    }

    #[test]
    fn one_stuck_worker_stops_the_pings() {
        let mut watchdog = Watchdog::new(2);
        assert!(watchdog.should_ping(&[10, 20]));
        assert!(!watchdog.should_ping(&[11, 20]), "second worker stuck");
        assert!(!watchdog.should_ping(&[50, 20]), "still stuck");
        assert!(watchdog.should_ping(&[51, 21]), "both turned");
    }

    /// Loops that answer a turn request only when they are not stuck.
    struct FakeLoops {
        turns: std::cell::RefCell<Vec<u64>>,
        stuck: Vec<bool>,
    }

    impl Loops for FakeLoops {
        fn turns(&self) -> Vec<u64> {
            self.turns.borrow().clone()
        }

        fn request_turn(&self) {
            for (turns, stuck) in self.turns.borrow_mut().iter_mut().zip(&self.stuck) {
                if !stuck {
                    *turns += 1;
                }
            }
        }
    }

    #[test]
    fn idle_loops_that_answer_the_request_keep_the_pings_coming() {
        let loops = FakeLoops {
            turns: vec![0, 0].into(),
            stuck: vec![false, false],
        };
        let mut watchdog = Watchdog::new(2);
        assert!(!tick(&mut watchdog, &loops), "no turn asked for yet");
        for period in 0..5 {
            assert!(tick(&mut watchdog, &loops), "period {period}");
        }
    }

    #[test]
    fn a_worker_that_does_not_turn_stops_the_pings() {
        let mut loops = FakeLoops {
            turns: vec![0, 0].into(),
            stuck: vec![false, false],
        };
        let mut watchdog = Watchdog::new(2);
        tick(&mut watchdog, &loops);
        assert!(tick(&mut watchdog, &loops));
        loops.stuck[1] = true;
        // The request sent at the last ping was still answered.
        assert!(tick(&mut watchdog, &loops));
        for period in 0..5 {
            assert!(!tick(&mut watchdog, &loops), "stuck, period {period}");
        }
        loops.stuck[1] = false;
        assert!(
            !tick(&mut watchdog, &loops),
            "its first answer comes after this request"
        );
        assert!(tick(&mut watchdog, &loops), "turning again");
    }

    #[test]
    fn a_worker_count_mismatch_never_pings() {
        let mut watchdog = Watchdog::new(2);
        assert!(!watchdog.should_ping(&[1]));
        assert!(!watchdog.should_ping(&[1, 1, 1]));
        assert!(watchdog.should_ping(&[1, 1]));
    }
}
