//! `ReadingProxyHeader`: a connection behind a load balancer that sends a
//! PROXY header first (`--proxy-protocol`), driven through the scripted
//! stream of `tests.rs`. The parser itself is tested, byte boundary by byte
//! boundary, in `proxy_protocol/tests.rs`; these tests are about the state:
//! waiting, handing over, closing and counting.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::connection::HeaderFault;
use crate::proxy_protocol::{Malformed, V2_SIGNATURE};

/// The balancer's own address: the socket's peer.
const BALANCER: &str = "127.0.0.1:40112";
/// A v1 header naming 203.0.113.7:56324 as the client.
const V1: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n";

/// Large enough for a header and a message; reads stay small
/// (`READ_CHUNK`), so most headers arrive over several reads.
fn proxied(framing: Framing) -> Harness {
    Harness::with(Config {
        max_message: 256,
        proxy_protocol: true,
        ..config(framing)
    })
}

fn balancer() -> SocketAddr {
    BALANCER.parse().expect("address")
}

/// A connection just accepted from the balancer.
fn conn_behind_proxy(h: &Harness) -> Connection {
    let name = Name {
        id: 1,
        peer: Some(balancer().into()),
        via: None,
    };
    Connection::behind_proxy(name, h.start)
}

/// A version 2 PROXY header for a TCP over IPv4 connection from
/// `source`.
fn v2_proxy(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[192, 0, 2, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

/// A version 2 LOCAL header: the balancer's health check.
fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    header
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A readiness event with an admission hook, as the loop gives one with
/// `--max-connections-per-ip`.
fn ready_admitting(
    h: &Harness,
    conn: &mut Connection,
    stream: &mut ScriptedStream,
    admit: &mut dyn FnMut(IpAddr) -> bool,
) -> Turn {
    let mut scratch = vec![0; scratch_len(&h.config)];
    let mut cx = Context {
        config: &h.config,
        stats: &h.stats,
        now: h.start + ms(1),
        scratch: &mut scratch,
        observer: Some(&h.observed),
        admission: Some(admit),
    };
    conn.on_ready(stream, &mut cx)
}

#[track_caller]
fn assert_reading_header(conn: &Connection) {
    assert_live(conn, "ReadingProxyHeader", Interest::READABLE);
}

#[test]
fn a_v1_header_then_a_message_in_one_burst_is_served_and_named_after_the_client() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    assert_reading_header(&conn);
    let mut stream = ScriptedStream::new().reading([data(&joined(&[V1, b"Hello"])), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_eq!(stream.written, b"olleH", "the header is never part of the reply");
    assert_eq!(
        conn.name().to_string(),
        "conn 1 (203.0.113.7:56324 via 127.0.0.1:40112)"
    );
    assert_eq!(h.stats().bytes_in, (V1.len() + 5) as u64);
}

#[test]
fn a_header_alone_in_a_burst_is_not_an_empty_message() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(V1), Read::WouldBlock]);
    assert_eq!(h.ready(&mut conn, &mut stream, ms(1)), Turn::Wait);
    assert_receiving(&conn);
    assert_no_reply_no_shutdown(&stream);
    stream.push_reads([data(b"abc"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(2));
    assert_eq!(stream.written, b"cba");
}

#[test]
fn a_header_split_byte_by_byte_is_awaited() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new();
    for (offset, byte) in V1.iter().enumerate() {
        stream.push_reads([data(&[*byte]), Read::WouldBlock]);
        assert_eq!(h.ready(&mut conn, &mut stream, ms(offset as u64)), Turn::Wait);
        if offset + 1 < V1.len() {
            assert_reading_header(&conn);
        }
    }
    assert_receiving(&conn);
    assert_eq!(
        conn.name().peer.map(SocketAddr::from),
        Some("203.0.113.7:56324".parse().expect("address"))
    );
    stream.push_reads([data(b"Hi"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(200));
    assert_eq!(stream.written, b"iH");
}

#[test]
fn a_v2_header_names_the_client_and_the_rest_is_the_message() {
    let h = proxied(Framing::Eof);
    let mut conn = conn_behind_proxy(&h);
    let header = v2_proxy([198, 51, 100, 9], 4242);
    let mut stream =
        ScriptedStream::new().reading([data(&joined(&[&header, b"ab"])), data(b"cd"), Read::Eof]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_eq!(stream.written, b"dcba");
    assert_eq!(
        conn.name().to_string(),
        "conn 1 (198.51.100.9:4242 via 127.0.0.1:40112)"
    );
}

#[test]
fn a_whole_line_after_the_header_is_answered_without_another_read() {
    let h = proxied(Framing::Line);
    let mut conn = conn_behind_proxy(&h);
    // Everything in one read (the chunk is large enough), then nothing
    // more ever: the line must not wait for a read that never comes.
    let h = Harness::with(Config {
        read_chunk: 256,
        ..h.config.clone()
    });
    let mut stream = ScriptedStream::new().reading([data(&joined(&[V1, b"abc\nextra"])), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_eq!(stream.written, b"cba\n");
    assert_eq!(h.stats().bytes_discarded, 5, "the bytes after the line");
}

#[test]
fn line_framing_resumes_the_search_after_the_bytes_that_came_with_the_header() {
    let h = proxied(Framing::Line);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(&joined(&[V1, b"ab"])), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_receiving(&conn);
    stream.push_reads([data(b"c\n"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(2));
    assert_eq!(stream.written, b"cba\n");
}

#[test]
fn a_v2_local_health_check_is_served_as_the_balancer() {
    let h = proxied(Framing::Eof);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(&v2_local()), Read::Eof]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_eq!(conn.name().to_string(), "conn 1 (127.0.0.1:40112)");
    assert_eq!(stream.shutdowns(), 1, "an empty reply, then end of stream");
    assert_closed(&conn, CloseReason::Completed);
    assert_eq!(h.stats().closed_proxy_error, 0, "not a fault");
}

#[test]
fn a_v1_unknown_header_is_served_as_the_balancer() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(b"PROXY UNKNOWN\r\nping"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_eq!(stream.written, b"gnip");
    assert_eq!(conn.name().to_string(), "conn 1 (127.0.0.1:40112)");
}

#[test]
fn a_missing_header_closes_as_proxy_error_without_a_reply() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(b"Hello"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_closed(
        &conn,
        CloseReason::ProxyError(HeaderFault::Malformed(Malformed::NoSignature)),
    );
    assert_no_reply_no_shutdown(&stream);
}

#[test]
fn a_malformed_header_closes_as_proxy_error() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut stream =
        ScriptedStream::new().reading([data(b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_closed(
        &conn,
        CloseReason::ProxyError(HeaderFault::Malformed(Malformed::V1BadAddress)),
    );
    assert_no_reply_no_shutdown(&stream);
}

#[test]
fn end_of_stream_before_a_whole_header_is_a_proxy_error() {
    let h = proxied(Framing::Eof);
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(&V1[..10]), Read::Eof]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_closed(&conn, CloseReason::ProxyError(HeaderFault::EndedEarly));
}

#[test]
fn the_header_counts_towards_max_message() {
    let h = Harness::with(Config {
        max_message: 20,
        linger: Duration::ZERO,
        proxy_protocol: true,
        ..config(Framing::Burst)
    });
    let mut conn = conn_behind_proxy(&h);
    let mut stream = ScriptedStream::new().reading([data(V1), Read::WouldBlock]);
    h.ready(&mut conn, &mut stream, ms(1));
    assert_closed(&conn, CloseReason::Oversize);
    assert!(stream.written.is_empty());
    assert!(
        stream.read_sizes().iter().sum::<usize>() <= 21,
        "never more than max_message + 1 buffered: {:?}",
        stream.read_sizes()
    );
}

#[test]
fn the_header_counts_towards_the_read_timeout() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    // A balancer (or a client posing as one) that trickles its header a
    // byte every five seconds keeps the idle timer fresh, but not the read
    // timeout, which runs from accept.
    let mut stream = ScriptedStream::new();
    for (byte, second) in V1.iter().zip((0..READ.as_secs()).step_by(5)) {
        stream.push_reads([data(&[*byte]), Read::WouldBlock]);
        h.ready(&mut conn, &mut stream, secs(second));
        assert_reading_header(&conn);
        assert!(!conn.on_deadline(&h.at(secs(second + 1))), "not due yet");
    }
    assert_eq!(h.deadline(&conn), Some(h.start + READ));
    assert!(conn.on_deadline(&h.at(READ)));
    assert_closed(&conn, CloseReason::ReadTimeout);
}

#[test]
fn a_client_over_the_per_ip_limit_is_refused_once_the_header_names_it() {
    let h = proxied(Framing::Burst);
    let mut conn = conn_behind_proxy(&h);
    let mut asked = Vec::new();
    let mut refuse = |client: IpAddr| {
        asked.push(client);
        false
    };
    let mut stream = ScriptedStream::new().reading([data(&joined(&[V1, b"Hello"])), Read::WouldBlock]);
    ready_admitting(&h, &mut conn, &mut stream, &mut refuse);
    assert_eq!(
        asked,
        ["203.0.113.7".parse::<IpAddr>().expect("ip")],
        "the header's client, not the balancer"
    );
    assert_closed(&conn, CloseReason::PerIpLimit);
    assert_no_reply_no_shutdown(&stream);
}

#[test]
fn a_health_check_is_admitted_as_the_balancer() {
    let h = proxied(Framing::Eof);
    let mut conn = conn_behind_proxy(&h);
    let mut asked = Vec::new();
    let mut admit = |client: IpAddr| {
        asked.push(client);
        true
    };
    let mut stream = ScriptedStream::new().reading([data(&v2_local()), Read::Eof]);
    ready_admitting(&h, &mut conn, &mut stream, &mut admit);
    assert_eq!(asked, [balancer().ip()]);
    assert_closed(&conn, CloseReason::Completed);
}

#[test]
fn every_row_out_of_reading_proxy_header_is_taken_by_some_input() {
    let burst = proxied(Framing::Burst);
    let line = Harness::with(Config {
        read_chunk: 256,
        ..proxied(Framing::Line).config
    });
    let tight = |linger| {
        Harness::with(Config {
            max_message: 20,
            linger,
            proxy_protocol: true,
            ..config(Framing::Burst)
        })
    };
    let run = |h: &Harness, reads: Vec<Read>| {
        let mut conn = conn_behind_proxy(h);
        let mut stream = ScriptedStream::new().reading(reads);
        h.ready(&mut conn, &mut stream, ms(1));
        conn
    };
    // HeaderRead, MessageComplete, MessageTooLong (both ways), BadHeader.
    run(&burst, vec![data(V1), Read::WouldBlock]);
    run(&line, vec![data(&joined(&[V1, b"a\n"])), Read::WouldBlock]);
    run(&tight(LINGER), vec![data(V1), Read::WouldBlock]);
    run(&tight(Duration::ZERO), vec![data(V1), Read::WouldBlock]);
    run(&burst, vec![data(b"nope"), Read::WouldBlock]);
    // Failed, ClientRefused, TimedOut, Abandoned.
    run(&burst, vec![Read::Error(ErrorKind::ConnectionReset)]);
    let mut conn = conn_behind_proxy(&burst);
    let mut stream = ScriptedStream::new().reading([data(V1), Read::WouldBlock]);
    ready_admitting(&burst, &mut conn, &mut stream, &mut |_| false);
    conn_behind_proxy(&burst).on_deadline(&burst.at(IDLE));
    conn_behind_proxy(&burst).cut_off(&burst.at(ms(1)));

    let taken = TRANSITIONS_TAKEN.with(|taken| taken.borrow().clone());
    for row in TRANSITIONS
        .iter()
        .filter(|row| row.0 == StateKind::ReadingProxyHeader)
    {
        assert!(taken.contains(row), "no input takes {row:?}");
    }
}
