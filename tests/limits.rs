//! Connection-level behaviour under slow, silent, greedy and broken clients
//! (issue 3: limits and timeouts, lingering close, faults), against servers
//! run in-process on port 0 with short configured timeouts.
//!
//! Run with `cargo test --test limits`.
//!
//! Nothing here sleeps. Timeouts are checked from the client's side:
//! `Instant::now()` is read *before* the event that starts the server's
//! clock (a connect, a message), so "closed no earlier than T" is a strict
//! lower bound; upper bounds are only [`PATIENCE`]. Clients that must keep
//! sending are paced by the server's own counters (send, then wait until the
//! server has read it), never by a timer.
//!
//! About leaks: every accepted connection ends in exactly one counted way
//! (`closed_completed`, `closed_oversize`, ...), so once none is open the
//! `closed_*` counters add up to `accepted`. The tests that count end with
//! [`stop_accounted`], which checks exactly that. `replies_completed` is
//! not one of those ends: a reply written in full may still end as a linger
//! timeout or a reset. The limit tests also prove that slots are freed: with
//! `max_connections: 1`, a later client is only ever served once the
//! earlier connection's slot has really been given back.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    PATIENCE, TestServer, config, connect, connect_from, exchange, line_reply, read_to_end, stop_accounted,
    wait_until,
};
use revecho::{Config, Exit, Framing, StatsSnapshot};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// How long a client waits to conclude "no reply yet". Only ever used as a
/// negative check on a client that must *not* be answered; a slow machine
/// can make it pass vacuously, never fail wrongly.
const NO_REPLY_WINDOW: Duration = Duration::from_millis(300);

/// Line framing, and no timeout unless a test asks for one: a test that
/// checks one timeout must not be closed by another.
fn line_config() -> Config {
    Config {
        framing: Framing::Line,
        idle_timeout: None,
        read_timeout: None,
        linger: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        ..config()
    }
}

/// Closes `stream` with SO_LINGER 0, so the kernel sends a reset (RST)
/// instead of the usual FIN.
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(stream);
}

/// Connects with a tiny receive buffer. It must be set before connecting,
/// because the window scale is agreed in the handshake; otherwise loopback
/// autotuning gives the client megabytes and the server never has to wait.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// Asserts that nothing arrives on `stream` within [`NO_REPLY_WINDOW`].
fn assert_no_reply_yet(stream: &mut TcpStream, why: &str) {
    stream
        .set_read_timeout(Some(NO_REPLY_WINDOW))
        .expect("short read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{why}, but the client got {other:?}"),
    }
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
}

/// The sum of every `closed_*` counter.
fn closed_abnormally(stats: &StatsSnapshot) -> u64 {
    stats.closed_oversize
        + stats.closed_idle_timeout
        + stats.closed_read_timeout
        + stats.closed_reset
        + stats.closed_io_error
        + stats.closed_linger_timeout
        + stats.closed_shutdown_cut_off
}

/// A line message of `len` bytes (terminator included) with varied content,
/// so a reply that is reversed wrongly or cut cannot match by accident.
fn line_of(len: usize) -> Vec<u8> {
    let mut line: Vec<u8> = (0..len - 1).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    line
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// A second client host: loopback owns all of 127.0.0.0/8.
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A connection the server closed at once, without a reply: end of stream,
/// or a reset if the client's data had already arrived.
fn assert_closed_without_reply(stream: &mut TcpStream) {
    match read_to_end(stream) {
        Ok(reply) => assert_eq!(reply, b"", "no reply expected"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn an_address_over_max_connections_per_ip_is_closed_at_once_and_others_are_served() {
    let server = TestServer::start(Config {
        max_connections_per_ip: 2,
        ..line_config()
    });
    // Two silent connections from one host: its whole allowance.
    let _held = [
        connect_from(OTHER_HOST, server.addr),
        connect_from(OTHER_HOST, server.addr),
    ];
    wait_until("both held connections accepted", || {
        server.snapshot().accepted == 2
    });

    // A third from that host is closed at once, whether it is silent or has
    // already sent its message.
    let mut silent = connect_from(OTHER_HOST, server.addr);
    assert_closed_without_reply(&mut silent);
    let mut eager = connect_from(OTHER_HOST, server.addr);
    eager.write_all(b"let me in\n").expect("send");
    assert_closed_without_reply(&mut eager);
    wait_until("both refusals counted", || server.snapshot().per_ip_limit == 2);

    // Another address is unaffected.
    assert_eq!(
        exchange(server.addr, b"from elsewhere\n", false),
        line_reply(b"from elsewhere\n")
    );
    let stats = server.snapshot();
    assert_eq!(stats.per_ip_limit, 2);
    assert_eq!(
        stats.accepted, 5,
        "refused connections were accepted, then closed"
    );
    assert_eq!(stats.replies_completed, 1);
}

#[test]
fn without_max_connections_per_ip_one_address_may_hold_many() {
    let server = TestServer::start(line_config());
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect_from(OTHER_HOST, server.addr)).collect();
    for client in &mut clients {
        client.write_all(b"same host\n").expect("send");
    }
    for client in &mut clients {
        client.shutdown(std::net::Shutdown::Write).expect("half-close");
        assert_eq!(read_to_end(client).expect("reply"), line_reply(b"same host\n"));
    }
    assert_eq!(server.snapshot().per_ip_limit, 0);
}

#[test]
fn clients_beyond_max_connections_wait_in_the_backlog_until_a_slot_frees() {
    let server = TestServer::start(Config {
        max_connections: 2,
        ..line_config()
    });
    let first = connect(server.addr);
    let second = connect(server.addr);
    wait_until("both silent clients accepted", || server.snapshot().accepted == 2);

    // The kernel completes the handshake and queues the third client in the
    // backlog, so connecting and sending succeed; the server must not take it.
    let mut third = connect(server.addr);
    third.write_all(b"third\n").expect("send");
    assert_no_reply_yet(&mut third, "the server is full");
    assert_eq!(
        server.snapshot().accepted,
        2,
        "accepted a client beyond the limit"
    );

    // The first client leaves: the server reads end of stream, answers it
    // with an empty reply and frees the slot, and the queued client gets in.
    drop(first);
    let reply = read_to_end(&mut third).expect("reply once a slot freed");
    assert_eq!(reply, b"driht\n");
    let stats = server.snapshot();
    assert_eq!(stats.accepted, 3);
    assert_eq!(closed_abnormally(&stats), 0, "{stats:?}");
    drop(second);
    stop_accounted(server);
}

#[test]
fn a_lingering_connection_holds_its_slot_until_the_linger_ends() {
    let linger = Duration::from_millis(600);
    let server = TestServer::start(Config {
        max_connections: 1,
        linger,
        ..line_config()
    });
    // Read before the first message is sent, so the server's linger (which
    // starts after the reply) begins after this instant.
    let start = Instant::now();
    let mut first = connect(server.addr);
    first.write_all(b"first\n").expect("send");
    let reply = read_to_end(&mut first).expect("first reply");
    assert_eq!(reply, b"tsrif\n");
    // `first` stays open: the server lingers on it, holding the only slot.

    let mut second = connect(server.addr);
    second.write_all(b"second\n").expect("send");
    let reply = read_to_end(&mut second).expect("second reply");
    let waited = start.elapsed();
    assert_eq!(reply, b"dnoces\n");
    assert!(
        waited >= linger,
        "second client served after {waited:?}, before the first one's linger of {linger:?} ended"
    );
    let stats = server.snapshot();
    assert_eq!(stats.closed_linger_timeout, 1, "{stats:?}");
    assert_eq!(stats.accepted, 2);
    drop(first);
    stop_accounted(server);
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start(Config {
        idle_timeout: Some(idle),
        ..line_config()
    });
    let start = Instant::now();
    let mut client = connect(server.addr);
    // The client sent nothing, so the server's close is a clean FIN.
    let reply = read_to_end(&mut client).expect("a clean end of stream");
    let waited = start.elapsed();
    assert!(reply.is_empty(), "a silent client got {} bytes", reply.len());
    assert!(
        waited >= idle,
        "closed after {waited:?}, before the idle timeout of {idle:?}"
    );
    wait_until("the idle timeout counted", || {
        server.snapshot().closed_idle_timeout == 1
    });
    let stats = server.snapshot();
    assert_eq!(closed_abnormally(&stats), 1, "{stats:?}");
    assert_eq!(stats.replies_completed, 0);
    stop_accounted(server);
}

#[test]
fn an_incomplete_message_is_cut_off_at_the_read_timeout() {
    let read_timeout = Duration::from_millis(400);
    let server = TestServer::start(Config {
        read_timeout: Some(read_timeout),
        ..line_config()
    });
    let start = Instant::now();
    let mut client = connect(server.addr);
    client.write_all(b"no newline yet").expect("send");
    let reply = read_to_end(&mut client).expect("a clean end of stream");
    let waited = start.elapsed();
    assert!(
        reply.is_empty(),
        "an incomplete message got {} bytes back",
        reply.len()
    );
    assert!(
        waited >= read_timeout,
        "closed after {waited:?}, before the read timeout of {read_timeout:?}"
    );
    wait_until("the read timeout counted", || {
        server.snapshot().closed_read_timeout == 1
    });
    let stats = server.snapshot();
    assert_eq!(closed_abnormally(&stats), 1, "{stats:?}");
    stop_accounted(server);
}

#[test]
fn a_trickling_client_escapes_the_idle_timeout_but_not_the_read_timeout() {
    // The client sends one byte, waits until the server has read it, sends
    // the next, and never finishes its line. Every byte is progress, so the
    // idle timeout never fires while it trickles, which is exactly how such
    // a client would hold its slot forever. The read timeout, counted from
    // accept, must cut it off anyway. The timeouts are long enough (1s, 2s)
    // that a thread stalled by a loaded machine cannot look idle.
    let idle = Duration::from_secs(1);
    let read_timeout = Duration::from_secs(2);
    let server = TestServer::start(Config {
        idle_timeout: Some(idle),
        read_timeout: Some(read_timeout),
        max_message: 64 * 1024 * 1024,
        ..line_config()
    });
    let start = Instant::now();
    let mut client = connect(server.addr);
    let mut sent = 0u64;
    loop {
        let stats = server.snapshot();
        if closed_abnormally(&stats) > 0 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still trickling after {PATIENCE:?}: {stats:?}"
        );
        if stats.bytes_in == sent {
            if client.write_all(b"x").is_err() {
                // The server closed under us; the counter follows.
                wait_until("the close counted", || closed_abnormally(&server.snapshot()) > 0);
                break;
            }
            sent += 1;
        } else {
            thread::yield_now();
        }
    }
    let waited = start.elapsed();
    let stats = server.snapshot();
    assert_eq!(
        stats.closed_idle_timeout, 0,
        "a client that kept sending was idled out: {stats:?}"
    );
    assert_eq!(stats.closed_read_timeout, 1, "{stats:?}");
    assert!(
        waited >= read_timeout,
        "cut off after {waited:?}, before the read timeout of {read_timeout:?}"
    );
    assert!(sent > 1, "the client trickled only {sent} bytes");
    stop_accounted(server);
}

/// 500 clients and their 500 accepted sockets live in this one process,
/// next to the other tests' sockets: make sure the soft limit allows it (it
/// is often 1024).
fn allow_a_thousand_sockets() {
    let limit = rlimit::increase_nofile_limit(4096).expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= 1500,
        "RLIMIT_NOFILE soft limit {limit} is too low for this test"
    );
}

#[test]
fn five_hundred_silent_connections_do_not_delay_a_normal_client() {
    allow_a_thousand_sockets();
    const SILENT: usize = 500;

    // No idle timeout here, so the silent ones are certainly all still open
    // when the normal client is served, however slow the machine.
    let server = TestServer::start(line_config());
    let silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(server.addr)).collect();
    wait_until("every silent client accepted", || {
        server.snapshot().accepted == SILENT as u64
    });
    let reply = exchange(server.addr, b"Hello, world!\n", false);
    assert_eq!(reply, b"!dlrow ,olleH\n");
    let stats = server.snapshot();
    assert_eq!(stats.accepted, SILENT as u64 + 1);
    assert_eq!(closed_abnormally(&stats), 0, "{stats:?}");
    drop(silent);
    drop(server);
}

#[test]
fn five_hundred_silent_connections_are_all_closed_by_the_idle_timeout() {
    allow_a_thousand_sockets();
    const SILENT: usize = 500;
    let idle = Duration::from_millis(500);
    let server = TestServer::start(Config {
        idle_timeout: Some(idle),
        ..line_config()
    });
    let start = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(server.addr)).collect();
    for (index, client) in silent.iter_mut().enumerate() {
        let reply = read_to_end(client).expect("a clean end of stream");
        assert!(
            reply.is_empty(),
            "silent client {index} got {} bytes",
            reply.len()
        );
        if index == 0 {
            // Every one of them was accepted after `start`.
            let waited = start.elapsed();
            assert!(
                waited >= idle,
                "closed after {waited:?}, before the idle timeout of {idle:?}"
            );
        }
    }
    wait_until("every idle close counted", || {
        server.snapshot().closed_idle_timeout == SILENT as u64
    });
    let stats = server.snapshot();
    // No reply was involved, so here the counters must add up exactly.
    assert_eq!(stats.accepted, SILENT as u64);
    assert_eq!(closed_abnormally(&stats), SILENT as u64, "{stats:?}");
    stop_accounted(server);
}

// ---------------------------------------------------------------------------
// Lingering close
// ---------------------------------------------------------------------------

#[test]
fn a_large_reply_survives_a_client_that_sends_more_and_reads_late() {
    // A naive close after the reply would find the extra 256 KiB unread and
    // make the kernel send a reset, which throws away the part of the reply
    // that the client has not read yet. That race is lost most of the time,
    // not always, hence the repetitions.
    const ROUNDS: u64 = 20;
    const EXTRA: usize = 256 * 1024;
    let server = TestServer::start(line_config());
    let line = line_of(200_000);
    let expected = line_reply(&line);
    let mut burst = line.clone();
    // The extra bytes contain newlines too: they are not a second message.
    burst.extend((0..EXTRA).map(|i| if i % 100 == 99 { b'\n' } else { b'z' }));
    let burst = Arc::new(burst);

    for round in 0..ROUNDS {
        let mut client = connect(server.addr);
        // One write of the whole buffer, from a thread: the client reads
        // nothing until the server has flushed the reply, and while the
        // server is sending it does not read, so a blocking write from this
        // thread could wait on a reader that is this thread.
        let mut writer = client.try_clone().expect("clone client");
        let data = Arc::clone(&burst);
        let writing = thread::spawn(move || writer.write_all(&data));

        wait_until("the reply flushed", || {
            server.snapshot().replies_completed == round + 1
        });
        let reply = read_to_end(&mut client)
            .unwrap_or_else(|e| panic!("round {round}: reply destroyed: {e} ({:?})", e.kind()));
        assert_eq!(reply.len(), expected.len(), "round {round}: reply length");
        assert!(reply == expected, "round {round}: reply bytes differ");
        writing
            .join()
            .expect("writer thread")
            .unwrap_or_else(|e| panic!("round {round}: the extra bytes were refused: {e}"));
        drop(client);
        // The server read and threw away every byte after the line, then
        // saw the client's end of stream.
        wait_until("the extra bytes discarded", || {
            server.snapshot().bytes_discarded == (round + 1) * EXTRA as u64
        });
    }
    let stats = server.snapshot();
    assert_eq!(stats.replies_completed, ROUNDS);
    assert_eq!(stats.bytes_in, ROUNDS * burst.len() as u64);
    assert_eq!(closed_abnormally(&stats), 0, "{stats:?}");
    stop_accounted(server);
}

#[test]
fn an_oversize_client_gets_a_clean_end_of_stream_and_no_reply() {
    const ROUNDS: u64 = 5;
    let server = TestServer::start(Config {
        max_message: 1024,
        ..line_config()
    });
    // Far more than the limit, and no newline: the server refuses it while
    // the client is still sending.
    let flood = Arc::new(vec![b'f'; 512 * 1024]);
    for round in 0..ROUNDS {
        let discarded_before = server.snapshot().bytes_discarded;
        let mut client = connect(server.addr);
        let mut writer = client.try_clone().expect("clone client");
        let data = Arc::clone(&flood);
        let writing = thread::spawn(move || writer.write_all(&data));

        // The server has refused the message and is discarding what follows:
        // only now read, while bytes may still be arriving.
        wait_until("the server discarding", || {
            server.snapshot().bytes_discarded > discarded_before
        });
        let reply = read_to_end(&mut client)
            .unwrap_or_else(|e| panic!("round {round}: not a clean end of stream: {e} ({:?})", e.kind()));
        assert!(
            reply.is_empty(),
            "round {round}: an oversize client got {} bytes",
            reply.len()
        );
        writing
            .join()
            .expect("writer thread")
            .unwrap_or_else(|e| panic!("round {round}: sending was cut short: {e}"));
        drop(client);
        wait_until("the refusal counted", || {
            server.snapshot().closed_oversize == round + 1
        });
    }
    let stats = server.snapshot();
    assert_eq!(stats.replies_completed, 0);
    assert_eq!(stats.bytes_out, 0);
    assert_eq!(closed_abnormally(&stats), ROUNDS, "{stats:?}");
    stop_accounted(server);
}

#[test]
fn bytes_sent_while_lingering_do_not_extend_the_linger() {
    let linger = Duration::from_millis(500);
    let server = TestServer::start(Config {
        linger,
        ..line_config()
    });
    let start = Instant::now();
    let mut client = connect(server.addr);
    client.write_all(b"hi\n").expect("send");
    let reply = read_to_end(&mut client).expect("reply and end of stream");
    assert_eq!(reply, b"ih\n");

    // Keep sending after the reply, each chunk as soon as the server has
    // discarded the previous one. If discarded bytes moved the deadline,
    // this would go on until PATIENCE runs out.
    let mut sent = 0u64;
    loop {
        let stats = server.snapshot();
        if stats.closed_linger_timeout > 0 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still lingering after {PATIENCE:?} of traffic: {stats:?}"
        );
        if stats.bytes_discarded == sent {
            if client.write_all(b"more bytes, 32 of them, for you\n").is_err() {
                // The server closed (and reset the extra data); the counter follows.
                wait_until("the linger timeout counted", || {
                    server.snapshot().closed_linger_timeout > 0
                });
                break;
            }
            sent += 32;
        } else {
            thread::yield_now();
        }
    }
    let waited = start.elapsed();
    assert!(
        waited >= linger,
        "closed after {waited:?}, before the linger of {linger:?}"
    );
    assert!(sent > 0, "no byte was sent while lingering");
    let stats = server.snapshot();
    assert_eq!(stats.closed_linger_timeout, 1, "{stats:?}");
    assert_eq!(closed_abnormally(&stats), 1, "{stats:?}");
    assert_eq!(stats.replies_completed, 1);
    stop_accounted(server);
}

#[test]
fn linger_zero_closes_right_after_the_reply() {
    // No timeout at all and room for one connection: the second client can
    // only be served if the first connection closed by itself after its
    // reply, although its client never closes.
    let server = TestServer::start(Config {
        linger: Duration::ZERO,
        max_connections: 1,
        ..line_config()
    });
    let mut first = connect(server.addr);
    first.write_all(b"first\n").expect("send");
    assert_eq!(read_to_end(&mut first).expect("first reply"), b"tsrif\n");

    let reply = exchange(server.addr, b"second\n", false);
    assert_eq!(reply, b"dnoces\n");
    let stats = server.snapshot();
    assert_eq!(stats.closed_linger_timeout, 0, "{stats:?}");
    assert_eq!(closed_abnormally(&stats), 0, "{stats:?}");
    assert_eq!(stats.replies_completed, 2);
    drop(first);
    stop_accounted(server);
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[test]
fn resets_at_every_stage_drop_only_that_connection() {
    // One slot: each normal client after a reset can only be served once the
    // reset connection's slot is free again, so this also shows no stage
    // leaks a connection.
    let server = TestServer::start(Config {
        max_connections: 1,
        max_message: 16 * 1024 * 1024,
        ..line_config()
    });
    let still_serving = |stage: &str, resets: u64| {
        let reply = exchange(server.addr, b"still serving\n", false);
        assert_eq!(reply, b"gnivres llits\n", "after a reset {stage}");
        // The slot was freed (the normal client got in), so the close has
        // been counted; wait on the sum anyway, so a misclassified close
        // fails on the assertion below rather than after PATIENCE.
        wait_until("the close counted", || {
            closed_abnormally(&server.snapshot()) >= resets
        });
        let stats = server.snapshot();
        assert_eq!(stats.closed_reset, resets, "after a reset {stage}: {stats:?}");
        assert_eq!(
            closed_abnormally(&stats),
            resets,
            "after a reset {stage}: {stats:?}"
        );
    };

    // (a) Right after connecting, before sending anything.
    let client = connect(server.addr);
    reset(client);
    still_serving("right after connect", 1);

    // (b) In the middle of a message.
    let bytes_in = server.snapshot().bytes_in;
    let mut client = connect(server.addr);
    client.write_all(b"half a mess").expect("send");
    wait_until("the partial message read", || {
        server.snapshot().bytes_in == bytes_in + 11
    });
    reset(client);
    still_serving("mid-message", 2);

    // (c) While the server is sending a reply that does not fit in the
    // client's receive buffer, the client never reading.
    let partial_writes = server.snapshot().partial_writes;
    let replies = server.snapshot().replies_completed;
    let mut client = connect_with_small_receive_buffer(server.addr);
    client
        .write_all(&line_of(8 * 1024 * 1024))
        .expect("send a large line");
    wait_until("a partial write", || {
        server.snapshot().partial_writes > partial_writes
    });
    reset(client);
    still_serving("while the reply is being sent", 3);
    // The cut-off reply was not counted as completed (only the normal one).
    assert_eq!(server.snapshot().replies_completed, replies + 1);

    // (d) While the server lingers after a complete reply. The reply counts
    // as completed; the connection's end counts as a reset.
    let mut client = connect(server.addr);
    client.write_all(b"linger\n").expect("send");
    assert_eq!(read_to_end(&mut client).expect("reply"), b"regnil\n");
    reset(client);
    still_serving("while lingering", 4);

    let stats = server.snapshot();
    // Four reset clients, four normal ones; replies: the normal ones and (d).
    assert_eq!(stats.accepted, 8, "{stats:?}");
    assert_eq!(stats.replies_completed, 5, "{stats:?}");
    assert_eq!(
        server.stop(),
        Exit::Finished,
        "run() should still have been running"
    );
}

#[test]
fn a_server_with_stuck_clients_sleeps_instead_of_spinning() {
    // Every way a client can leave the loop with nothing to do: silent
    // (Receiving), served but still open (Lingering), not reading a reply far
    // larger than the socket buffers (Sending, blocked), and queued in the
    // backlog behind the connection limit. None of them may wake the loop:
    // with edge-triggered readiness and interest that follows state, there
    // is no event to report until something changes.
    let server = TestServer::start(Config {
        max_connections: 3,
        max_message: 16 * 1024 * 1024,
        linger: Duration::from_secs(60),
        ..line_config()
    });
    let _silent = connect(server.addr);

    let mut lingering = connect(server.addr);
    lingering.write_all(b"served\n").expect("send");
    assert_eq!(read_to_end(&mut lingering).expect("reply"), b"devres\n");

    let big = line_of(8 * 1024 * 1024);
    let mut not_reading = connect_with_small_receive_buffer(server.addr);
    not_reading.write_all(&big).expect("send the big line");
    wait_until("the reply to fill the socket buffers", || {
        server.snapshot().partial_writes > 0
    });

    let mut queued = connect(server.addr);
    queued.write_all(b"queued\n").expect("send");
    assert_eq!(server.snapshot().accepted, 3);

    let before = server.snapshot().poll_wakeups;
    assert_no_reply_yet(&mut queued, "the server is at its connection limit");
    let wakeups = server.snapshot().poll_wakeups - before;
    // A spinning loop wakes thousands of times in this window; a sleeping
    // one perhaps once, for the queued client's arrival.
    assert!(wakeups <= 5, "{wakeups} wakeups while nothing could happen");

    // Nothing was lost while it slept: freeing a slot serves the queued client.
    drop(lingering);
    assert_eq!(read_to_end(&mut queued).expect("reply"), b"deueuq\n");
    stop_accounted(server);
}

// ---------------------------------------------------------------------------
// A cut-off reply ends with a reset
// ---------------------------------------------------------------------------

/// Reads until an error or end of stream; returns the bytes read and the
/// error (`None` for a clean end of stream).
fn read_until_error(stream: &mut TcpStream) -> (usize, Option<std::io::Error>) {
    let mut got = 0;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (got, None),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
}

#[test]
fn a_reply_cut_off_by_the_idle_timeout_ends_with_a_reset_not_an_end_of_stream() {
    // An orderly close (FIN) after part of a reply would let this client
    // read a clean end of stream, and take the part for the whole.
    let server = TestServer::start(Config {
        framing: Framing::Eof,
        max_message: 32 * 1024 * 1024,
        idle_timeout: Some(Duration::from_millis(300)),
        ..line_config()
    });
    let message = line_of(16 * 1024 * 1024);
    let mut client = connect_with_small_receive_buffer(server.addr);
    client.write_all(&message).expect("send the message");
    client.shutdown(std::net::Shutdown::Write).expect("half-close");
    // The client reads nothing: the reply fills the socket buffers, no
    // byte moves, and the idle timeout cuts the reply off.
    wait_until("the idle timeout while sending", || {
        server.snapshot().closed_idle_timeout == 1
    });
    let (got, error) = read_until_error(&mut client);
    assert!(got < message.len(), "the whole reply arrived: {got} bytes");
    let error = error.unwrap_or_else(|| {
        panic!(
            "a clean end of stream after {got} of {} reply bytes",
            message.len()
        )
    });
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    let stats = stop_accounted(server);
    assert_eq!(stats.replies_completed, 0);
    assert_eq!(stats.closed_idle_timeout, 1);
}

#[test]
fn a_connection_closed_while_receiving_still_ends_with_an_orderly_close() {
    // Only replies are cut off with a reset: a client idle before its
    // message is complete gets the usual end of stream.
    let server = TestServer::start(Config {
        idle_timeout: Some(Duration::from_millis(100)),
        ..line_config()
    });
    let mut client = connect(server.addr);
    client.write_all(b"no newline").expect("send");
    let (got, error) = read_until_error(&mut client);
    assert_eq!(got, 0);
    assert!(error.is_none(), "expected end of stream, got {error:?}");
    let stats = stop_accounted(server);
    assert_eq!(stats.closed_idle_timeout, 1);
}

// ---------------------------------------------------------------------------
// A turn is bounded in calls
// ---------------------------------------------------------------------------

#[test]
fn one_byte_writes_yield_the_loop_every_few_dozen_calls() {
    // 20,000 one-byte writes all fit in loopback's socket buffers, so none
    // would block: bounded only by bytes (a megabyte), the reply would go
    // out in one turn. Bounded in calls, the connection yields every 64.
    const SIZE: usize = 20_000;
    let server = TestServer::start(Config {
        framing: Framing::Eof,
        read_chunk: 1,
        write_chunk: Some(1),
        ..line_config()
    });
    let message = line_of(SIZE);
    assert_eq!(exchange(server.addr, &message, true), common::reversed(&message));
    let stats = stop_accounted(server);
    // At least 20,000 / 64 (about 312) yields on the writing side alone if
    // no write ever blocks; far fewer than that still proves the bound.
    assert!(
        stats.turns_yielded >= 100,
        "{} yields for {SIZE} one-byte writes",
        stats.turns_yielded
    );
}

// ---------------------------------------------------------------------------
// Workers (`--workers N`): the limits across loops
// ---------------------------------------------------------------------------

/// The most connections a test makes to see both workers accept. The
/// kernel hashes each connection's addresses and ports to one of the two
/// sockets, so each new source port is a fresh coin toss: the chance that
/// all of these land on one worker is 2^-999.
const COIN_TOSSES: usize = 1000;

#[test]
fn both_workers_accept_connections_spread_by_the_kernel() {
    let workers = common::TestWorkers::start(config(), 2);
    let mut sent = 0;
    while workers.accepted().contains(&0) {
        assert!(
            sent < COIN_TOSSES,
            "one worker never accepted: {:?}",
            workers.accepted()
        );
        let message = format!("client {sent}");
        assert_eq!(
            exchange(workers.addr, message.as_bytes(), true),
            common::reversed(message.as_bytes())
        );
        sent += 1;
    }
    assert_eq!(workers.snapshot().accepted, sent as u64);
}

#[test]
fn the_per_ip_limit_is_one_limit_across_workers() {
    let workers = common::TestWorkers::start(
        Config {
            max_connections_per_ip: 1,
            ..config()
        },
        2,
    );
    // Held open without a message: it keeps its address's one slot.
    let holder = connect(workers.addr);
    wait_until("the first connection to be accepted", || {
        workers.snapshot().accepted == 1
    });
    let mut refused: u64 = 0;
    // Every later client from the same address is refused, whichever
    // worker the kernel hands it to, until both workers have refused or
    // admitted one: then the other worker saw the first one's count.
    while workers.accepted().contains(&0) {
        assert!(
            refused < COIN_TOSSES as u64,
            "one worker never accepted: {:?}",
            workers.accepted()
        );
        let mut client = connect(workers.addr);
        // Closed at once, not served: a worker with a count of its own
        // would admit it, and this read would time out.
        assert_eq!(read_to_end(&mut client).expect("closed at once"), b"");
        refused += 1;
        assert_eq!(
            workers.snapshot().per_ip_limit,
            refused,
            "{:?}",
            workers.accepted()
        );
    }
    drop(holder);
}
