//! systemd readiness notification, end to end: the real binary started with
//! `NOTIFY_SOCKET` pointing at a Unix datagram socket this test owns, as
//! systemd would start a `Type=notify` unit. It must send `READY=1` once it
//! accepts connections, `STOPPING=1` as soon as SIGTERM begins the
//! shutdown, and `WATCHDOG=1` regularly when `WATCHDOG_USEC` asks for it,
//! idle or not.
//!
//! Run with `cargo test --test notify`.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

use common::{PATIENCE, RunningBinary, exchange, revecho, reversed};

/// The systemd side: a datagram socket that receives notifications.
struct Manager {
    socket: UnixDatagram,
    /// What to put in `NOTIFY_SOCKET`.
    name: String,
    /// The socket file's directory, removed on drop (none when abstract).
    directory: Option<PathBuf>,
}

impl Manager {
    /// A manager socket at a path in a fresh temporary directory.
    fn at_path(label: &str) -> Manager {
        let directory = std::env::temp_dir().join(format!("revecho-notify-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir(&directory).expect("create temp dir");
        let path = directory.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind manager socket");
        Manager {
            socket,
            name: path.display().to_string(),
            directory: Some(directory),
        }
    }

    /// A manager socket with an abstract name (`@...`), as systemd's own.
    fn abstract_named(label: &str) -> Manager {
        let name = format!("revecho-notify-{}-{label}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let socket = UnixDatagram::bind_addr(&address).expect("bind abstract manager socket");
        Manager {
            socket,
            name: format!("@{name}"),
            directory: None,
        }
    }

    /// The next notification; a timeout means it never came.
    fn receive(&self) -> String {
        self.socket
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let mut buffer = [0u8; 256];
        let length = self.socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(directory) = &self.directory {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

/// Starts the binary for `manager`, checks READY=1 and that it then
/// serves, stops it with SIGTERM and checks STOPPING=1 and the exit.
fn ready_then_stopping(manager: &Manager) {
    let mut command = revecho();
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &manager.name)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    let mut server = RunningBinary::start(command, 1);
    assert_eq!(manager.receive(), "READY=1");
    // Ready means serving.
    assert_eq!(
        exchange(server.addr(), b"Hello, world!", true),
        reversed(b"Hello, world!")
    );
    server.signal("TERM");
    assert_eq!(manager.receive(), "STOPPING=1");
    // A graceful stop on the first SIGTERM exits 0.
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        !server.stderr().contains("cannot notify systemd"),
        "{}",
        server.stderr()
    );
}

#[test]
fn notifies_ready_then_stopping_on_a_path_socket() {
    ready_then_stopping(&Manager::at_path("path"));
}

#[test]
fn notifies_ready_then_stopping_on_an_abstract_socket() {
    ready_then_stopping(&Manager::abstract_named("abstract"));
}

#[test]
fn an_unreachable_notify_socket_is_a_warning_not_a_failure() {
    let manager = Manager::at_path("unreachable");
    let missing = format!("{}-missing", manager.name);
    let mut command = revecho();
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &missing);
    let mut server = RunningBinary::start(command, 1);
    let line = server.wait_for_log("cannot notify systemd");
    assert!(line.contains("sending READY=1"), "{line}");
    assert!(line.contains(&missing), "{line}");
    assert_eq!(
        exchange(server.addr(), b"still serving", true),
        reversed(b"still serving")
    );
    server.signal("TERM");
    assert_eq!(server.wait().code(), Some(0));
}

#[test]
fn stopping_is_sent_when_shutdown_begins_not_when_the_last_client_is_done() {
    let manager = Manager::at_path("stopping-early");
    let mut command = revecho();
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--framing",
            "eof",
            "--shutdown-grace",
            "60s",
        ])
        .env("NOTIFY_SOCKET", &manager.name)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    let mut server = RunningBinary::start(command, 1);
    assert_eq!(manager.receive(), "READY=1");
    // In flight: it has sent nothing yet, and eof framing waits for more.
    let mut client = common::connect(server.addr());
    client.write_all(b"in flight").expect("send");
    server.signal("TERM");
    // STOPPING=1 arrives while the client is still being served.
    assert_eq!(manager.receive(), "STOPPING=1");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        common::read_to_end(&mut client).expect("reply"),
        reversed(b"in flight")
    );
    assert_eq!(server.wait().code(), Some(0), "{}", server.stderr());
}

#[test]
fn an_idle_server_with_two_workers_pings_the_watchdog() {
    let manager = Manager::abstract_named("watchdog");
    let mut command = revecho();
    command
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env("NOTIFY_SOCKET", &manager.name)
        // 200 ms: a ping every 100 ms, if every idle loop answers the
        // watchdog's wake-up.
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut server = RunningBinary::start(command, 1);
    assert_eq!(manager.receive(), "READY=1");
    for ping in 0..3 {
        assert_eq!(manager.receive(), "WATCHDOG=1", "ping {ping}");
    }
    server.signal("TERM");
    // Pings may still arrive until the shutdown begins.
    while manager.receive() == "WATCHDOG=1" {}
    assert_eq!(server.wait().code(), Some(0), "{}", server.stderr());
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let manager = Manager::at_path("other-pid");
    let mut command = revecho();
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &manager.name)
        .env("WATCHDOG_USEC", "200000")
        // Our parent's: PID 1 is never us.
        .env("WATCHDOG_PID", "1");
    let mut server = RunningBinary::start(command, 1);
    assert_eq!(manager.receive(), "READY=1");
    server.signal("TERM");
    // The next datagram is STOPPING=1, not a ping.
    assert_eq!(manager.receive(), "STOPPING=1");
    assert_eq!(server.wait().code(), Some(0));
}
