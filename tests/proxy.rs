//! `--proxy-protocol` and `--proxy-from` over real sockets, with the real
//! binary: clients write a PROXY header (as a load balancer would) and then
//! their message. Loopback owns all of 127.0.0.0/8, so a client socket
//! bound to 127.0.0.2 plays a second balancer host, and the header names
//! any client address we like.

mod common;

use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};

use common::{RunningBinary, connect, connect_from, read_to_end, revecho};

/// Starts `revecho --listen 127.0.0.1:0 ARGS`.
fn start(args: &[&str]) -> RunningBinary {
    let mut command = revecho();
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    RunningBinary::start(command, 1)
}

/// Stops `server` with SIGTERM and returns its summary line.
fn summary(mut server: RunningBinary) -> (String, RunningBinary) {
    server.signal("TERM");
    let line = server.wait_for_log("summary:");
    assert!(server.wait().success(), "{}", server.stderr());
    (line, server)
}

/// One counter of a `summary:` line.
fn counter(summary: &str, key: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {summary:?}"))
        .parse()
        .expect("a number")
}

fn v1(source: SocketAddr) -> Vec<u8> {
    format!("PROXY TCP4 {} 192.0.2.1 {} 443\r\n", source.ip(), source.port()).into_bytes()
}

const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

fn v2(source: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(ip) = source.ip() else {
        panic!("an IPv4 source")
    };
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&ip.octets());
    header.extend_from_slice(&[192, 0, 2, 1]);
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    header
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

/// Sends `bytes`, half-closes, and reads the answer to end of stream.
fn send_all(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    read_to_end(&mut stream).expect("reply")
}

/// Sends `bytes` to a server that refuses without a reply: the answer is
/// end of stream, or a reset when the refusal closed the socket with some
/// of the bytes unread (the kernel's rule, as for any close).
fn assert_refused(mut stream: TcpStream, bytes: &[u8]) {
    // The write itself may already meet the close.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    match read_to_end(&mut stream) {
        Ok(reply) => assert_eq!(reply, b"", "a refusal has no reply"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn v1_and_v2_headers_then_a_message_get_the_reply_and_the_log_names_the_client() {
    let server = start(&["--proxy-protocol", "--framing", "eof", "-v"]);
    for (header, client) in [
        (v1(address("203.0.113.7:56324")), "203.0.113.7:56324"),
        (v2(address("198.51.100.9:4242")), "198.51.100.9:4242"),
    ] {
        let stream = connect(server.addr());
        let balancer = stream.local_addr().expect("local address");
        let reply = send_all(stream, &[&header[..], b"Hello, world!"].concat());
        assert_eq!(reply, b"!dlrow ,olleH", "the header is not part of the reply");
        server.wait_for_log(&format!("({client} via {balancer}): closed"));
    }
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "completed"), 2, "{line}");
    assert_eq!(counter(&line, "proxy_error"), 0, "{line}");
}

#[test]
fn a_header_split_byte_by_byte_is_awaited() {
    let server = start(&["--proxy-protocol", "--framing", "line", "-v"]);
    let mut stream = connect(server.addr());
    stream.set_nodelay(true).expect("nodelay");
    for byte in v1(address("203.0.113.7:56324")) {
        stream.write_all(&[byte]).expect("one byte");
    }
    stream.write_all(b"abc\n").expect("the line");
    assert_eq!(read_to_end(&mut stream).expect("reply"), b"cba\n");
    server.wait_for_log("(203.0.113.7:56324 via 127.0.0.1:");
}

#[test]
fn a_header_alone_then_the_message_in_a_later_burst_is_one_message() {
    let server = start(&["--proxy-protocol", "-v"]);
    let mut stream = connect(server.addr());
    stream
        .write_all(&v1(address("203.0.113.7:56324")))
        .expect("header");
    // Once the server has read the header alone, it must wait, not reply
    // to an empty message.
    server.wait_for_log("ReadingProxyHeader => Receiving");
    stream.write_all(b"ping").expect("message");
    let mut reply = [0; 4];
    std::io::Read::read_exact(&mut stream, &mut reply).expect("reply");
    assert_eq!(&reply, b"gnip");
}

#[test]
fn a_missing_or_malformed_header_is_a_logged_counted_proxy_error() {
    let server = start(&["--proxy-protocol", "--framing", "eof"]);
    assert_refused(connect(server.addr()), b"Hello, world!");
    server.wait_for_log("closed: bad PROXY header: no PROXY protocol signature");
    assert_refused(connect(server.addr()), b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\nhi");
    server.wait_for_log("closed: bad PROXY header: v1 address does not match its family");
    assert_eq!(send_all(connect(server.addr()), b"PROXY TCP4"), b"");
    server.wait_for_log("closed: bad PROXY header: the peer closed before a whole header");
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "proxy_error"), 3, "{line}");
    assert_eq!(counter(&line, "accepted"), 3, "{line}");
}

#[test]
fn a_local_health_check_is_served_as_the_balancer_and_is_no_fault() {
    let server = start(&["--proxy-protocol", "--framing", "eof", "-v"]);
    let stream = connect(server.addr());
    let balancer = stream.local_addr().expect("local address");
    assert_eq!(send_all(stream, &[&v2_local()[..], b"ping"].concat()), b"gnip");
    server.wait_for_log(&format!("conn 1 ({balancer}): closed"));
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "completed"), 1, "{line}");
    assert_eq!(counter(&line, "proxy_error"), 0, "{line}");
}

#[test]
fn without_proxy_from_start_up_warns_that_any_peer_may_forge_an_address() {
    let server = start(&["--proxy-protocol"]);
    server.wait_for_log("--proxy-protocol without --proxy-from: any peer may send a PROXY header");
}

#[test]
fn proxy_from_refuses_every_other_peer_before_it_can_send_a_header() {
    let server = start(&[
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.2/32",
        "--framing",
        "eof",
    ]);
    server.wait_for_log("PROXY headers accepted from 127.0.0.2/32");
    let trusted = connect_from([127, 0, 0, 2].into(), server.addr());
    let header = v1(address("203.0.113.7:56324"));
    assert_eq!(send_all(trusted, &[&header[..], b"abc"].concat()), b"cba");
    let untrusted = connect_from([127, 0, 0, 3].into(), server.addr());
    assert_refused(untrusted, &[&header[..], b"abc"].concat());
    server.wait_for_log("closed at once: the peer is not in --proxy-from");
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "completed"), 1, "{line}");
    assert_eq!(counter(&line, "proxy_error"), 1, "{line}");
}

#[test]
fn the_variables_turn_on_the_proxy_protocol_and_list_the_trusted_peers() {
    let mut command = revecho();
    command
        .args(["--listen", "127.0.0.1:0", "--framing", "eof"])
        .env("REVECHO_PROXY_PROTOCOL", "true")
        .env("REVECHO_PROXY_FROM", "10.0.0.0/8,127.0.0.2/32");
    let server = RunningBinary::start(command, 1);
    server.wait_for_log("PROXY headers accepted from 10.0.0.0/8, 127.0.0.2/32");
    let trusted = connect_from([127, 0, 0, 2].into(), server.addr());
    let header = v1(address("203.0.113.7:56324"));
    assert_eq!(send_all(trusted, &[&header[..], b"abc"].concat()), b"cba");
}

#[test]
fn proxy_from_without_the_proxy_protocol_is_a_usage_error() {
    let output = revecho()
        .args(["--listen", "127.0.0.1:0", "--proxy-from", "10.0.0.0/8"])
        .output()
        .expect("run revecho");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--proxy-from needs --proxy-protocol"), "{stderr}");
}

/// Two balancer hosts (127.0.0.2, 127.0.0.3) relay clients; the limit is
/// one connection per client address.
#[test]
fn the_per_ip_limit_counts_the_header_client_not_the_balancer() {
    let server = start(&[
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
        "--framing",
        "line",
        "-v",
    ]);
    let client_a = address("203.0.113.7:1000");
    // Client A, through balancer 127.0.0.2, holds its one connection.
    let mut holder = connect_from([127, 0, 0, 2].into(), server.addr());
    holder.write_all(&v1(client_a)).expect("header");
    server.wait_for_log("(203.0.113.7:1000 via 127.0.0.2:");
    server.wait_for_log("ReadingProxyHeader => Receiving");
    // The same balancer relays another client: its address is not counted,
    // so the client is served.
    let other = connect_from([127, 0, 0, 2].into(), server.addr());
    let header = v1(address("203.0.113.8:1000"));
    assert_eq!(send_all(other, &[&header[..], b"abc\n"].concat()), b"cba\n");
    // Client A again, through another balancer: over its limit.
    let again = connect_from([127, 0, 0, 3].into(), server.addr());
    assert_refused(again, &[&v1(address("203.0.113.7:2000"))[..], b"abc\n"].concat());
    server.wait_for_log("(203.0.113.7:2000 via 127.0.0.3:");
    server.wait_for_log("closed: 203.0.113.7 is already at the per-ip limit (1)");
    // A's first connection ends: the charge released is A's, so A is
    // served again.
    holder.write_all(b"xyz\n").expect("line");
    assert_eq!(read_to_end(&mut holder).expect("reply"), b"zyx\n");
    drop(holder);
    server.wait_for_log("(203.0.113.7:1000 via 127.0.0.2:");
    server.wait_for_log_where("the first connection closed", |line| {
        line.contains("(203.0.113.7:1000 via") && line.contains(": closed")
    });
    let back = connect_from([127, 0, 0, 3].into(), server.addr());
    let header = v1(address("203.0.113.7:3000"));
    assert_eq!(send_all(back, &[&header[..], b"abc\n"].concat()), b"cba\n");
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "per_ip_limit"), 1, "{line}");
    assert_eq!(counter(&line, "completed"), 3, "{line}");
    assert_eq!(counter(&line, "accepted"), 4, "{line}");
}

/// With `--workers 2` the per-ip counts are one map for both workers, and
/// the header's client is charged in it whichever worker reads the header.
#[test]
fn with_workers_the_header_client_is_counted_once_for_all_workers() {
    let server = start(&[
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
        "--workers",
        "2",
        "--framing",
        "line",
        "-v",
    ]);
    let mut holder = connect_from([127, 0, 0, 2].into(), server.addr());
    holder
        .write_all(&v1(address("203.0.113.7:1000")))
        .expect("header");
    server.wait_for_log("(203.0.113.7:1000 via 127.0.0.2:");
    server.wait_for_log("ReadingProxyHeader => Receiving");
    // The kernel spreads these over both workers; every one is refused.
    const TRIES: u16 = 6;
    for port in 0..TRIES {
        let again = connect_from([127, 0, 0, 2].into(), server.addr());
        let header = v1(address(&format!("203.0.113.7:{}", 2000 + port)));
        assert_refused(again, &[&header[..], b"abc\n"].concat());
    }
    holder.write_all(b"xyz\n").expect("line");
    assert_eq!(read_to_end(&mut holder).expect("reply"), b"zyx\n");
    drop(holder);
    server.wait_for_log_where("the holder closed", |line| {
        line.contains("(203.0.113.7:1000 via") && line.contains(": closed")
    });
    let (line, _) = summary(server);
    assert_eq!(counter(&line, "per_ip_limit"), u64::from(TRIES), "{line}");
    assert_eq!(counter(&line, "completed"), 1, "{line}");
}
