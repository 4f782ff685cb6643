//! The reverse protocol over real loopback sockets, against servers run
//! in-process on port 0: the seed session, framing, binary safety, large
//! replies through a slow reader, many clients, the size limit, addresses,
//! the stop handle and slot reuse.
//!
//! Run with `cargo test --test protocol`.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    PATIENCE, TestServer, config, connect, exchange, line_reply, read_to_end, reversed, stop_accounted,
    wait_until,
};
use revecho::{Config, Exit, Framing, Server, StopHandle};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The test config with `framing`, and short linger and grace periods so a
/// failing test ends in about a second instead of the defaults' 2s and 5s.
fn quick_config(framing: Framing) -> Config {
    Config {
        framing,
        linger: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        ..config()
    }
}

/// A server bound and running on its own thread, for tests that need every
/// bound address or want to see how `run` ends. `run`'s result arrives on
/// the channel, so waiting for it is bounded by [`PATIENCE`].
struct Running {
    addrs: Vec<SocketAddr>,
    stop: StopHandle,
    finished: mpsc::Receiver<io::Result<Exit>>,
}

impl Running {
    fn start(config: Config) -> Running {
        let mut server = Server::bind(config).expect("bind server");
        let addrs = server.local_addrs().to_vec();
        let stop = server.stop_handle();
        let (sender, finished) = mpsc::channel();
        thread::spawn(move || {
            let _ = sender.send(server.run());
        });
        Running {
            addrs,
            stop,
            finished,
        }
    }

    /// Asks the server to stop and returns how `run` ended.
    fn stop(self) -> Exit {
        self.stop.stop().expect("wake the server");
        self.finished
            .recv_timeout(PATIENCE)
            .expect("run did not return after stop")
            .expect("run failed")
    }
}

/// Reads until end of stream in reads of at most `chunk` bytes, giving up
/// once more than `limit` bytes arrived (so a runaway server cannot make
/// the loop endless).
fn read_in_chunks(stream: &mut TcpStream, chunk: usize, limit: usize) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut buffer = vec![0u8; chunk];
    loop {
        let n = stream.read(&mut buffer).expect("read a chunk of the reply");
        if n == 0 {
            return reply;
        }
        reply.extend_from_slice(&buffer[..n]);
        assert!(reply.len() <= limit, "more than {limit} bytes of reply");
    }
}

/// Compares long byte strings without printing megabytes on failure.
fn assert_same_bytes(actual: &[u8], expected: &[u8]) {
    if actual != expected {
        let first_difference = actual.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "reply differs: {} bytes received, {} expected, first difference at {first_difference:?}",
            actual.len(),
            expected.len()
        );
    }
}

/// Steps 4, 5, 9 and 10 of /work/shared/SEED-SESSION.md, as the client saw
/// them, against the default (burst) framing.
#[test]
fn seed_session_replays_over_a_real_socket() {
    let server = TestServer::start(quick_config(Framing::default()));
    // Step 4: connect.
    let mut client = connect(server.addr);
    // Step 5: `send` hands all 13 bytes to the kernel in one call.
    let sent = client.write(b"Hello, world!").expect("send");
    assert_eq!(sent, 13);
    // Step 9: `recv(1024)`. TCP may deliver the reply in pieces, so keep
    // reading until 13 bytes are in; end of stream before that is a failure.
    let mut buffer = [0u8; 1024];
    let mut back = Vec::new();
    while back.len() < 13 {
        let n = client.read(&mut buffer).expect("recv");
        assert_ne!(n, 0, "end of stream after only {back:?}");
        back.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(back, b"!dlrow ,olleH");
    // Step 10: the empty read that says the server has closed.
    let n = client.read(&mut buffer).expect("recv after the reply");
    assert_eq!(n, 0, "expected end of stream, got {:?}", &buffer[..n]);
}

#[test]
fn byte_counters_match_one_exchange() {
    let server = TestServer::start(quick_config(Framing::Burst));
    assert_eq!(exchange(server.addr, b"Hello, world!", false), b"!dlrow ,olleH");
    // The reply was counted before it was written, so the counters are final
    // once the client has read it.
    let stats = server.snapshot();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.replies_completed, 1);
    assert_eq!(stats.bytes_in, 13);
    assert_eq!(stats.bytes_out, 13);
    stop_accounted(server);
}

#[test]
fn all_256_byte_values_come_back_exactly_reversed() {
    let every_byte: Vec<u8> = (0..=255).collect();
    // eof framing: the message ends at the half-close, whatever its bytes.
    let server = TestServer::start(quick_config(Framing::Eof));
    assert_eq!(exchange(server.addr, &every_byte, true), reversed(&every_byte));
    // burst framing: one small write arrives as one burst.
    let server = TestServer::start(quick_config(Framing::Burst));
    assert_eq!(exchange(server.addr, &every_byte, false), reversed(&every_byte));
}

#[test]
fn empty_message_then_half_close_gets_empty_reply_and_eof() {
    for framing in [Framing::Burst, Framing::Line, Framing::Eof] {
        let server = TestServer::start(quick_config(framing));
        // `exchange` reads to end of stream: a reset here would be an error.
        let reply = exchange(server.addr, b"", true);
        assert!(reply.is_empty(), "{framing}: expected no bytes, got {reply:?}");
        wait_until("the empty reply to be counted", || {
            server.snapshot().replies_completed == 1
        });
        stop_accounted(server);
    }
}

#[test]
fn line_reply_is_the_content_reversed_then_the_same_terminator() {
    let server = TestServer::start(quick_config(Framing::Line));
    assert_eq!(
        exchange(server.addr, b"Hello, world!\n", false),
        b"!dlrow ,olleH\n"
    );
    assert_eq!(
        exchange(server.addr, b"Hello, world!\r\n", false),
        b"!dlrow ,olleH\r\n"
    );
    // A bare line still gets its terminator back.
    assert_eq!(exchange(server.addr, b"\n", false), b"\n");
    assert_eq!(exchange(server.addr, b"\r\n", false), b"\r\n");
}

#[test]
fn bytes_after_the_first_line_are_not_part_of_the_message() {
    let server = TestServer::start(quick_config(Framing::Line));
    assert_eq!(exchange(server.addr, b"first\nsecond\n", false), b"tsrif\n");
    assert_eq!(
        exchange(server.addr, b"first\r\nsecond\r\nthird", true),
        b"tsrif\r\n"
    );
}

#[test]
fn line_half_closed_before_any_newline_is_replied_without_terminator() {
    let server = TestServer::start(quick_config(Framing::Line));
    assert_eq!(exchange(server.addr, b"no newline", true), b"enilwen on");
    // A lone \r is content, not half a terminator.
    assert_eq!(exchange(server.addr, b"ab\r", true), b"\rba");
}

/// The server's first `write` of an 8 MiB reply cannot all fit: the kernel
/// caps the send buffer at about 4 MiB, and the client's receive buffer is
/// shrunk before connecting (which also turns off its autotuning). So the
/// reply must leave in several writes, resumed on writable events.
#[test]
fn reply_larger_than_the_send_buffer_arrives_complete_through_a_slow_reader() {
    const PAYLOAD: usize = 8 * 1024 * 1024;
    let server = TestServer::start(Config {
        max_message: 16 * 1024 * 1024,
        ..quick_config(Framing::Eof)
    });
    // 251 is prime, so a reply shifted by any whole number of chunks differs.
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();

    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("client socket");
    // Before connect: the window is agreed in the handshake.
    socket.set_recv_buffer_size(4096).expect("shrink SO_RCVBUF");
    socket.connect(&server.addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    client.set_write_timeout(Some(PATIENCE)).expect("write timeout");

    // The server only reads until our half-close, so this cannot deadlock.
    client.write_all(&payload).expect("send the payload");
    client.shutdown(Shutdown::Write).expect("half-close");
    // Slow reader: read nothing until the server has hit a full send buffer...
    wait_until("a partial write", || server.snapshot().partial_writes > 0);
    // ...then take the reply in small reads.
    let reply = read_in_chunks(&mut client, 4096, PAYLOAD);
    assert_same_bytes(&reply, &reversed(&payload));

    let stats = server.snapshot();
    assert!(stats.partial_writes > 0);
    assert_eq!(stats.bytes_out, PAYLOAD as u64);
    assert_eq!(stats.replies_completed, 1);
    stop_accounted(server);
}

#[test]
fn tiny_read_and_write_chunks_still_give_exact_replies() {
    let content: Vec<u8> = (0..299u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut line = content.clone();
    line.push(b'\n');
    let expected_line = line_reply(&line);
    let binary: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();

    for (framing, message, half_close, expected) in [
        (Framing::Line, line, false, expected_line),
        (Framing::Eof, binary.clone(), true, reversed(&binary)),
    ] {
        let server = TestServer::start(Config {
            read_chunk: 4,
            write_chunk: Some(3),
            ..quick_config(framing)
        });
        let reply = exchange(server.addr, &message, half_close);
        assert_eq!(reply, expected, "{framing}");
        // Exactly the message was read and the reply written, 4 and 3 bytes at a time.
        let stats = server.snapshot();
        assert_eq!(stats.bytes_in, message.len() as u64, "{framing}");
        assert_eq!(stats.bytes_out, expected.len() as u64, "{framing}");
        stop_accounted(server);
    }
}

/// All 200 connect before any of them sends, so the server holds them all
/// at once; each message is distinct, so a reply sent to the wrong client
/// shows.
#[test]
fn two_hundred_concurrent_clients_each_get_their_own_reply() {
    const CLIENTS: usize = 200;
    let server = TestServer::start(quick_config(Framing::Line));
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.addr)).collect();
    let message = |i: usize| format!("client {i}: my own message\n").into_bytes();
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&message(i)).expect("send");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let content = message(i);
        let expected = line_reply(&content);
        let reply = read_to_end(client).expect("read reply");
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&expected),
            "client {i}"
        );
    }
    drop(clients);
    wait_until("every client to be accepted and answered", || {
        let stats = server.snapshot();
        stats.accepted >= CLIENTS as u64 && stats.replies_completed >= CLIENTS as u64
    });
    stop_accounted(server);
}

/// The refused client must see a clean end of stream, not a reset: the
/// server shuts down its write half and discards the rest instead of
/// closing with unread data.
#[test]
fn over_limit_message_gets_no_reply_and_the_next_client_is_served() {
    for framing in [Framing::Eof, Framing::Line] {
        let server = TestServer::start(Config {
            max_message: 64,
            ..quick_config(framing)
        });
        let mut client = connect(server.addr);
        // No newline at all, so in line framing too it is one 1000-byte message.
        client.write_all(&[b'x'; 1000]).expect("send");
        if framing == Framing::Eof {
            client.shutdown(Shutdown::Write).expect("half-close");
        }
        let reply = read_to_end(&mut client).expect("a clean end of stream, not a reset");
        assert!(
            reply.is_empty(),
            "{framing}: expected no reply, got {} bytes",
            reply.len()
        );
        drop(client);
        wait_until("the oversize close to be counted", || {
            server.snapshot().closed_oversize == 1
        });

        let (message, expected): (&[u8], &[u8]) = match framing {
            Framing::Line => (b"fits\n", b"stif\n"),
            _ => (b"fits", b"stif"),
        };
        assert_eq!(
            exchange(server.addr, message, framing == Framing::Eof),
            expected,
            "{framing}"
        );
        let stats = server.snapshot();
        assert_eq!(stats.closed_oversize, 1, "{framing}");
        assert_eq!(stats.replies_completed, 1, "{framing}");
        stop_accounted(server);
    }
}

#[test]
fn port_zero_binds_a_real_port() {
    let running = Running::start(quick_config(Framing::Burst));
    assert_eq!(running.addrs.len(), 1);
    let addr = running.addrs[0];
    assert_ne!(addr.port(), 0);
    assert_eq!(exchange(addr, b"Hello, world!", false), b"!dlrow ,olleH");
    assert_eq!(running.stop(), Exit::Finished);
}

/// `localhost` is 127.0.0.1 and, where it exists, ::1. Only what was
/// actually bound is checked, so the test holds on machines without IPv6.
#[test]
fn localhost_port_zero_gives_every_address_the_same_port_and_each_serves() {
    let running = Running::start(Config {
        listen: vec!["localhost:0".into()],
        ..quick_config(Framing::Burst)
    });
    assert!(!running.addrs.is_empty());
    let port = running.addrs[0].port();
    assert_ne!(port, 0);
    for addr in &running.addrs {
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(
            addr.port(),
            port,
            "every localhost address shares the first port: {:?}",
            running.addrs
        );
        assert_eq!(
            exchange(*addr, b"Hello, world!", false),
            b"!dlrow ,olleH",
            "{addr}"
        );
    }
    assert_eq!(running.stop(), Exit::Finished);
}

/// Several `listen` entries each get a listener of their own; ::1 is
/// skipped, not fatal, where IPv6 is missing.
#[test]
fn every_listen_address_serves_a_reply() {
    let running = Running::start(Config {
        listen: vec!["127.0.0.1:0".into(), "[::1]:0".into()],
        ..quick_config(Framing::Line)
    });
    assert!(
        running.addrs.iter().any(|addr| addr.is_ipv4()),
        "{:?}",
        running.addrs
    );
    for addr in &running.addrs {
        assert_ne!(addr.port(), 0);
        assert_eq!(exchange(*addr, b"abc\n", false), b"cba\n", "{addr}");
    }
    assert_eq!(running.stop(), Exit::Finished);
}

#[test]
fn stop_handle_ends_run_with_finished_and_the_port_then_refuses() {
    let running = Running::start(quick_config(Framing::Burst));
    let addr = running.addrs[0];
    // It is really running before it is asked to stop.
    assert_eq!(exchange(addr, b"Hello, world!", false), b"!dlrow ,olleH");
    assert_eq!(running.stop(), Exit::Finished);
    let error = TcpStream::connect(addr).expect_err("the listener should be closed");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
}

/// The message client `i` sends, and the reply it must get back.
fn own_line(i: usize) -> (Vec<u8>, Vec<u8>) {
    let message = format!("client {i} wants its own reply\n").into_bytes();
    let reply = line_reply(&message);
    (message, reply)
}

/// Runs clients `ids` one after another against a line-framing server at
/// `addr`. Four in five leave early: silently, before their reply, or with a
/// reset (SO_LINGER 0) before or after sending. The fifth sends and waits;
/// up to `WINDOW` of those stay open while newer ones come and go, so closes
/// and accepts interleave. Returns how many waited for (and got) their reply.
fn come_and_go(addr: SocketAddr, ids: std::ops::Range<usize>) -> usize {
    const WINDOW: usize = 8;
    let check_reply = |i: usize, mut client: TcpStream| {
        let expected = own_line(i).1;
        let reply = read_to_end(&mut client).expect("read reply");
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&expected),
            "client {i}"
        );
    };
    let reset_on_close = |client: &TcpStream| {
        SockRef::from(client)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
    };
    let mut waiting: Vec<(usize, TcpStream)> = Vec::new();
    let mut waited = 0;
    for i in ids {
        let mut client = connect(addr);
        let message = own_line(i).0;
        match i % 5 {
            // Leaves without a word.
            0 => drop(client),
            // Leaves before its reply.
            1 => {
                client.write_all(&message).expect("send");
                drop(client);
            }
            // Resets before sending.
            2 => {
                reset_on_close(&client);
                drop(client);
            }
            // Resets right after sending.
            3 => {
                client.write_all(&message).expect("send");
                reset_on_close(&client);
                drop(client);
            }
            // Waits for its reply.
            _ => {
                client.write_all(&message).expect("send");
                waiting.push((i, client));
            }
        }
        if waiting.len() > WINDOW {
            let (oldest, client) = waiting.remove(0);
            check_reply(oldest, client);
            waited += 1;
        }
    }
    for (i, client) in waiting {
        check_reply(i, client);
        waited += 1;
    }
    waited
}

/// Guards slot reuse, which the generation in connection tokens is part
/// of: with at most a few dozen clients open at a time, 300 connections
/// cycle through the same few slab slots, and four client threads make the
/// server handle closes and accepts in the same batches of events. Every
/// client that stays must get exactly its own reply.
#[test]
fn clients_that_leave_early_never_disturb_the_replies_of_others() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 75;
    let server = TestServer::start(quick_config(Framing::Line));
    let addr = server.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || come_and_go(addr, t * PER_THREAD..(t + 1) * PER_THREAD)))
        .collect();
    let waited: usize = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .sum();
    assert_eq!(waited, THREADS * PER_THREAD / 5);
    let connections = (THREADS * PER_THREAD) as u64;
    wait_until("every connection to be accepted", || {
        server.snapshot().accepted >= connections
    });
    assert!(server.snapshot().replies_completed >= waited as u64);
    stop_accounted(server);
}
