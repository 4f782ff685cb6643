//! Unit tests of the PROXY header parser: every field of both versions, a
//! header cut at every byte boundary, each way a header can be malformed,
//! and property tests that feed it arbitrary splits and arbitrary bytes.

use std::net::SocketAddr;

use super::{Command, MAX_V1_LENGTH, MAX_V2_PAYLOAD, Malformed, Parse, V2_FIXED_LENGTH, V2_SIGNATURE, parse};

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn proxy(source: &str, destination: &str) -> Command {
    Command::Proxy {
        source: address(source),
        destination: address(destination),
    }
}

fn complete(header_len: usize, command: Command) -> Parse {
    Parse::Complete { header_len, command }
}

fn malformed(reason: Malformed) -> Parse {
    Parse::Malformed(reason)
}

/// A version 2 header: signature, version 2 with `command`, the family
/// byte, the payload's length, the payload.
fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | command);
    header.push(family);
    let length = u16::try_from(payload.len()).expect("test payload fits a u16");
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(payload);
    header
}

/// The address block of a TCP over IPv4 header: 203.0.113.7:56324 to
/// 192.0.2.1:7342.
fn ipv4_addresses() -> Vec<u8> {
    let mut payload = vec![203, 0, 113, 7, 192, 0, 2, 1];
    payload.extend_from_slice(&56324u16.to_be_bytes());
    payload.extend_from_slice(&7342u16.to_be_bytes());
    payload
}

/// The address block of a TCP over IPv6 header: [2001:db8::7]:56324 to
/// [2001:db8::1]:7342.
fn ipv6_addresses() -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    payload.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    payload.extend_from_slice(&56324u16.to_be_bytes());
    payload.extend_from_slice(&7342u16.to_be_bytes());
    payload
}

/// One valid header of each kind, with what it must parse to.
fn valid_headers() -> Vec<(Vec<u8>, Command)> {
    let mut with_tlv = ipv4_addresses();
    // A TLV: type 0x01 (ALPN), length 2, "h2". Skipped.
    with_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    vec![
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7342\r\n".to_vec(),
            proxy("203.0.113.7:56324", "192.0.2.1:7342"),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 7342\r\n".to_vec(),
            proxy("[2001:db8::7]:56324", "[2001:db8::1]:7342"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), Command::Local),
        (
            v2(1, 0x11, &ipv4_addresses()),
            proxy("203.0.113.7:56324", "192.0.2.1:7342"),
        ),
        (
            v2(1, 0x21, &ipv6_addresses()),
            proxy("[2001:db8::7]:56324", "[2001:db8::1]:7342"),
        ),
        (
            v2(1, 0x11, &with_tlv),
            proxy("203.0.113.7:56324", "192.0.2.1:7342"),
        ),
        (v2(0, 0x00, &[]), Command::Local),
    ]
}

mod version_1 {
    use super::*;

    #[test]
    fn tcp4_gives_every_field() {
        let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7342\r\n";
        assert_eq!(
            parse(header),
            complete(header.len(), proxy("203.0.113.7:56324", "192.0.2.1:7342"))
        );
    }

    #[test]
    fn tcp6_gives_every_field() {
        let header = b"PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 1 65535\r\n";
        assert_eq!(
            parse(header),
            complete(header.len(), proxy("[2001:db8::7]:1", "[::ffff:192.0.2.1]:65535"))
        );
    }

    #[test]
    fn ports_zero_and_65535_are_accepted() {
        let header = b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n";
        assert_eq!(
            parse(header),
            complete(header.len(), proxy("1.2.3.4:0", "5.6.7.8:65535"))
        );
    }

    #[test]
    fn unknown_is_local_whatever_follows() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), complete(15, Command::Local));
        let header = b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n";
        assert_eq!(parse(header), complete(header.len(), Command::Local));
    }

    #[test]
    fn bytes_after_the_header_are_left_to_the_client() {
        let header = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        let mut received = header.to_vec();
        received.extend_from_slice(b"Hello, world!\n\r\n");
        assert_eq!(
            parse(&received),
            complete(header.len(), proxy("1.2.3.4:1", "5.6.7.8:2"))
        );
    }

    #[test]
    fn longest_header_of_107_bytes_is_accepted() {
        let mut header = b"PROXY UNKNOWN ".to_vec();
        header.resize(MAX_V1_LENGTH - 2, b'f');
        header.extend_from_slice(b"\r\n");
        assert_eq!(header.len(), MAX_V1_LENGTH);
        assert_eq!(parse(&header), complete(MAX_V1_LENGTH, Command::Local));
    }

    #[test]
    fn line_without_end_is_malformed_at_107_bytes_not_before() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(MAX_V1_LENGTH - 1, b'f');
        assert_eq!(parse(&line), Parse::Incomplete);
        line.push(b'f');
        assert_eq!(parse(&line), malformed(Malformed::V1TooLong));
        // A line end that comes too late does not help.
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse(&line), malformed(Malformed::V1TooLong));
    }

    #[test]
    fn malformed_lines() {
        use Malformed::*;
        let cases: &[(&[u8], Malformed)] = &[
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1MissingCarriageReturn),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", V1UnknownProtocol),
            (b"PROXY \r\n", V1UnknownProtocol),
            (b"PROXY TCP4\r\n", V1WrongFieldCount),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1WrongFieldCount),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", V1WrongFieldCount),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1WrongFieldCount),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1WrongFieldCount),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", V1BadAddress),
            (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", V1BadAddress),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1BadAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n", V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 000002\r\n", V1BadPort),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", V1NotText),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1NotText),
            (b"PROXY TCP4 1.2.3.4 5.6.7.\xc3\xa9 1 2\r\n", V1NotText),
            (b"PROXY\r\n", NoSignature),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NoSignature),
        ];
        for (line, reason) in cases {
            assert_eq!(
                parse(line),
                malformed(*reason),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

mod version_2 {
    use super::*;

    #[test]
    fn tcp_over_ipv4_gives_every_field() {
        let header = v2(1, 0x11, &ipv4_addresses());
        assert_eq!(header.len(), 28);
        assert_eq!(
            parse(&header),
            complete(28, proxy("203.0.113.7:56324", "192.0.2.1:7342"))
        );
    }

    #[test]
    fn tcp_over_ipv6_gives_every_field() {
        let header = v2(1, 0x21, &ipv6_addresses());
        assert_eq!(header.len(), 52);
        assert_eq!(
            parse(&header),
            complete(52, proxy("[2001:db8::7]:56324", "[2001:db8::1]:7342"))
        );
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut payload = ipv4_addresses();
        payload.extend_from_slice(&[0x04, 0x00, 0x00]); // NOOP, empty
        payload.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'b', b'c']); // AUTHORITY "abc"
        let header = v2(1, 0x11, &payload);
        assert_eq!(
            parse(&header),
            complete(header.len(), proxy("203.0.113.7:56324", "192.0.2.1:7342"))
        );
    }

    #[test]
    fn local_is_a_health_check_whatever_its_family_and_payload() {
        assert_eq!(parse(&v2(0, 0x00, &[])), complete(16, Command::Local));
        // Receivers must skip the payload of LOCAL, not trust the family.
        let header = v2(0, 0x11, &ipv4_addresses());
        assert_eq!(parse(&header), complete(28, Command::Local));
        assert_eq!(parse(&v2(0, 0xFF, &[1, 2, 3])), complete(19, Command::Local));
    }

    #[test]
    fn proxy_with_unspecified_family_is_served_as_local() {
        assert_eq!(parse(&v2(1, 0x00, &[])), complete(16, Command::Local));
    }

    #[test]
    fn bytes_after_the_header_are_left_to_the_client() {
        let header = v2(1, 0x11, &ipv4_addresses());
        let mut received = header.clone();
        received.extend_from_slice(b"Hello, world!");
        assert_eq!(
            parse(&received),
            complete(header.len(), proxy("203.0.113.7:56324", "192.0.2.1:7342"))
        );
    }

    #[test]
    fn longest_allowed_payload_is_accepted() {
        let mut payload = ipv4_addresses();
        payload.resize(MAX_V2_PAYLOAD, 0);
        let header = v2(1, 0x11, &payload);
        assert_eq!(
            parse(&header),
            complete(
                V2_FIXED_LENGTH + MAX_V2_PAYLOAD,
                proxy("203.0.113.7:56324", "192.0.2.1:7342")
            )
        );
    }

    #[test]
    fn an_overlong_announcement_is_refused_before_its_payload_arrives() {
        let mut header = v2(1, 0x11, &[]);
        let too_long = u16::try_from(MAX_V2_PAYLOAD + 1).unwrap();
        header[14..16].copy_from_slice(&too_long.to_be_bytes());
        assert_eq!(
            parse(&header),
            malformed(Malformed::V2TooLong(MAX_V2_PAYLOAD + 1))
        );
        header[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&header), malformed(Malformed::V2TooLong(65535)));
    }

    #[test]
    fn bad_version_is_refused_as_soon_as_its_byte_arrives() {
        for version in [0u8, 1, 3, 0xF] {
            let mut header = V2_SIGNATURE.to_vec();
            header.push(version << 4 | 1);
            assert_eq!(parse(&header), malformed(Malformed::V2BadVersion(version)));
        }
    }

    #[test]
    fn bad_command_is_refused() {
        for command in [2u8, 0xF] {
            let header = v2(command, 0x11, &ipv4_addresses());
            assert_eq!(parse(&header), malformed(Malformed::V2BadCommand(command)));
        }
    }

    #[test]
    fn families_other_than_tcp_are_refused() {
        // UDP over IPv4 and IPv6, Unix stream and datagram, and undefined
        // combinations.
        for family in [0x12u8, 0x22, 0x31, 0x32, 0x10, 0x13, 0x41] {
            let header = v2(1, family, &ipv6_addresses());
            assert_eq!(
                parse(&header),
                malformed(Malformed::V2UnsupportedFamily(family)),
                "0x{family:02x}"
            );
        }
    }

    #[test]
    fn a_length_too_short_for_the_addresses_is_refused() {
        let addresses = ipv4_addresses();
        let header = v2(1, 0x11, &addresses[..11]);
        assert_eq!(parse(&header), malformed(Malformed::V2AddressesTruncated(11)));
        let addresses = ipv6_addresses();
        let header = v2(1, 0x21, &addresses[..35]);
        assert_eq!(parse(&header), malformed(Malformed::V2AddressesTruncated(35)));
        // IPv4 addresses are not enough for the IPv6 family.
        let header = v2(1, 0x21, &ipv4_addresses());
        assert_eq!(parse(&header), malformed(Malformed::V2AddressesTruncated(12)));
    }

    #[test]
    fn a_bad_signature_is_refused() {
        let mut header = v2(1, 0x11, &ipv4_addresses());
        header[11] = b'X';
        assert_eq!(parse(&header), malformed(Malformed::NoSignature));
        // A signature cut short by client data is refused at the first
        // byte that differs.
        assert_eq!(parse(b"\r\n\r\nhello"), malformed(Malformed::NoSignature));
    }
}

mod without_a_header {
    use super::*;

    #[test]
    fn nothing_yet_is_incomplete() {
        assert_eq!(parse(b""), Parse::Incomplete);
    }

    #[test]
    fn client_data_is_refused_at_its_first_byte() {
        assert_eq!(parse(b"H"), malformed(Malformed::NoSignature));
        assert_eq!(parse(b"Hello, world!\n"), malformed(Malformed::NoSignature));
        assert_eq!(parse(b"\0"), malformed(Malformed::NoSignature));
    }

    #[test]
    fn client_data_that_starts_like_a_signature_is_refused_where_it_differs() {
        assert_eq!(parse(b"PRO"), Parse::Incomplete);
        assert_eq!(parse(b"PROBLEM"), malformed(Malformed::NoSignature));
        assert_eq!(parse(b"\r\n"), Parse::Incomplete);
        assert_eq!(parse(b"\r\nhello"), malformed(Malformed::NoSignature));
    }

    #[test]
    fn every_reason_displays_as_one_short_line() {
        use Malformed::*;
        let reasons = [
            NoSignature,
            V1TooLong,
            V1MissingCarriageReturn,
            V1NotText,
            V1UnknownProtocol,
            V1WrongFieldCount,
            V1BadAddress,
            V1BadPort,
            V2BadVersion(15),
            V2BadCommand(15),
            V2UnsupportedFamily(0xFF),
            V2TooLong(65535),
            V2AddressesTruncated(35),
        ];
        for reason in reasons {
            let text = reason.to_string();
            assert!(
                !text.is_empty() && text.len() < 80 && !text.contains('\n'),
                "{text:?}"
            );
        }
    }
}

/// A header delivered in pieces: every prefix short of the whole must be
/// `Incomplete` (never refused, never complete early), and the whole must
/// parse as if it had arrived at once.
mod split_across_reads {
    use super::*;

    #[test]
    fn every_prefix_of_every_valid_header_is_incomplete() {
        for (header, command) in valid_headers() {
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    Parse::Incomplete,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(&header)
                );
            }
            assert_eq!(parse(&header), complete(header.len(), command));
        }
    }
}

mod any_input {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A valid header of any kind, with arbitrary addresses and ports, and
    /// what it must parse to.
    fn valid_header() -> impl Strategy<Value = (Vec<u8>, Command)> {
        let v1_tcp4 = (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>(), any::<u16>()).prop_map(
            |(source, destination, source_port, destination_port)| {
                let source = SocketAddr::from((source, source_port));
                let destination = SocketAddr::from((destination, destination_port));
                let line = format!(
                    "PROXY TCP4 {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                );
                (line.into_bytes(), Command::Proxy { source, destination })
            },
        );
        let v1_tcp6 = (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(
            |(source, destination, source_port, destination_port)| {
                let source = SocketAddr::from((source, source_port));
                let destination = SocketAddr::from((destination, destination_port));
                let line = format!(
                    "PROXY TCP6 {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                );
                (line.into_bytes(), Command::Proxy { source, destination })
            },
        );
        let v2_tcp4 = (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(source, destination, source_port, destination_port, tlvs)| {
                let mut payload = [source, destination].concat();
                payload.extend_from_slice(&source_port.to_be_bytes());
                payload.extend_from_slice(&destination_port.to_be_bytes());
                payload.extend_from_slice(&tlvs);
                let command = Command::Proxy {
                    source: SocketAddr::from((source, source_port)),
                    destination: SocketAddr::from((destination, destination_port)),
                };
                (v2(1, 0x11, &payload), command)
            });
        let v2_tcp6 = (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(source, destination, source_port, destination_port, tlvs)| {
                let mut payload = [source, destination].concat();
                payload.extend_from_slice(&source_port.to_be_bytes());
                payload.extend_from_slice(&destination_port.to_be_bytes());
                payload.extend_from_slice(&tlvs);
                let command = Command::Proxy {
                    source: SocketAddr::from((source, source_port)),
                    destination: SocketAddr::from((destination, destination_port)),
                };
                (v2(1, 0x21, &payload), command)
            });
        let v2_local = (any::<u8>(), vec(any::<u8>(), 0..64))
            .prop_map(|(family, payload)| (v2(0, family, &payload), Command::Local));
        prop_oneof![v1_tcp4, v1_tcp6, v2_tcp4, v2_tcp6, v2_local]
    }

    proptest! {
        /// Whatever the header and wherever TCP cuts it, and whatever the
        /// client sends after it: incomplete until the header is whole,
        /// then the same answer, with the client's bytes left alone.
        #[test]
        fn any_split_of_a_valid_header_parses_the_same(
            (header, command) in valid_header(),
            cut in any::<prop::sample::Index>(),
            client_data in vec(any::<u8>(), 0..32),
        ) {
            let cut = cut.index(header.len());
            prop_assert_eq!(parse(&header[..cut]), Parse::Incomplete);
            let mut received = header.clone();
            received.extend_from_slice(&client_data);
            prop_assert_eq!(parse(&received), complete(header.len(), command));
        }

        /// Untrusted bytes never panic, a complete header never claims more
        /// bytes than it was given, and no answer waits past the bound.
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in vec(any::<u8>(), 0..1200)) {
            check_bounded(&bytes);
        }

        /// The same, with bytes that start with a signature, so the fuzzing
        /// reaches past the first byte.
        #[test]
        fn arbitrary_bytes_after_a_signature_never_panic(
            version_1 in any::<bool>(),
            rest in vec(any::<u8>(), 0..1200),
        ) {
            let mut bytes = if version_1 { b"PROXY ".to_vec() } else { V2_SIGNATURE.to_vec() };
            bytes.extend_from_slice(&rest);
            check_bounded(&bytes);
        }

        /// And with text that looks like a v1 line, to reach the field
        /// parsing.
        #[test]
        fn arbitrary_v1_lines_never_panic(line in "PROXY (TCP4|TCP6|UNKNOWN)[ 0-9a-f.:]{0,100}\r\n") {
            check_bounded(line.as_bytes());
        }
    }

    fn check_bounded(bytes: &[u8]) {
        match parse(bytes) {
            Parse::Complete { header_len, .. } => {
                assert!(header_len <= bytes.len());
                assert!(header_len <= V2_FIXED_LENGTH + MAX_V2_PAYLOAD);
            }
            Parse::Incomplete => {
                assert!(bytes.len() < V2_FIXED_LENGTH + MAX_V2_PAYLOAD);
            }
            Parse::Malformed(_) => {}
        }
    }
}
