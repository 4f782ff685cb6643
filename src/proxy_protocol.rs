//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a load
//! balancer sends in front of each connection, so that the server learns the
//! real client's address instead of the balancer's.
//!
//! The parser is sans-IO: [`parse`] looks at the bytes received so far and
//! says whether they hold a whole header, a broken one, or not enough yet. It
//! owns no socket and keeps no state between calls, so the connection state
//! machine can call it again after every read, and the tests can cut a header
//! at every byte boundary. A header split across reads is awaited, not
//! rejected, because TCP may deliver it in pieces like any other bytes. The
//! wait is bounded: a version 1 line longer than 107 bytes, or a version 2
//! header announcing more than `MAX_V2_PAYLOAD` bytes, is malformed as soon
//! as that is known, so an untrusted peer cannot make us buffer without end.
//!
//! The specification is HAProxy's `doc/proxy-protocol.txt`. What we accept:
//!
//! - v1: `PROXY TCP4 <src> <dst> <srcport> <dstport>\r\n`, the same with
//!   `TCP6`, and `PROXY UNKNOWN ...\r\n`.
//! - v2: the 12-byte signature, version 2, command `LOCAL` or `PROXY`, and
//!   for `PROXY` the families TCP over IPv4 or IPv6 (or `UNSPEC`). TLVs after
//!   the addresses are skipped: we have no use for them.
//!
//! Why hand-written rather than the `ppp` crate: the grammar is small (one
//! text line, one fixed binary layout), we need exactly one answer that the
//! crate does not give directly (a truncated header is "wait", not an error:
//! with `ppp` that means checking `is_incomplete()` on every error), and we
//! need a bound on how much we wait, which we would have to add around the
//! crate anyway. A hundred lines we own, fuzzed by the property tests, cost
//! less than a dependency and its API surface.
//!
//! [`cidr`] decides which peers are trusted to send a header at all.

//! The connection state machine calls [`parse`] in its
//! `ReadingProxyHeader` state (see `connection.rs`); the fuzz targets reach
//! it through `revecho::internals`.

pub(crate) mod cidr;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest version 1 header, `\r\n` included (the specification's
/// worst case: `PROXY UNKNOWN` with two full IPv6 addresses and ports).
pub const MAX_V1_LENGTH: usize = 107;

/// How many bytes a version 1 header starts with.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// How every version 2 header starts: bytes that no text protocol begins
/// with, so a server can tell a v2 header from client data.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The fixed part of a version 2 header: signature, version and command,
/// family and protocol, and the two-byte length of what follows.
pub const V2_FIXED_LENGTH: usize = 16;

/// The most bytes a version 2 header may announce after its fixed part. The
/// largest address block is 216 bytes (two Unix paths); the rest is TLVs,
/// which balancers use for a few short values (an ALPN, a TLS version, a
/// cloud endpoint id). 1 KiB holds all of that; a peer announcing up to
/// 64 KiB would otherwise make every connection buffer that much.
pub const MAX_V2_PAYLOAD: usize = 1024;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// Possibly the start of a header: read more and call again.
    Incomplete,
    /// Not a PROXY header, or a broken one: close the connection.
    Malformed(Malformed),
    /// A whole header. The first `header_len` bytes are the header; anything
    /// after them is the client's own data.
    Complete {
        /// How many bytes the header took.
        header_len: usize,
        /// Whose connection this is.
        command: Command,
    },
}

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The balancer relays a client's connection: these are the client's
    /// address and the address the client connected to.
    Proxy {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (the balancer's front end).
        destination: SocketAddr,
    },
    /// The connection carries no client address: a version 2 `LOCAL` (the
    /// balancer's own health check), a version 1 `PROXY UNKNOWN`, or a
    /// version 2 `PROXY` with the `UNSPEC` family. Serve it with the
    /// balancer's own address as the peer.
    Local,
}

/// Why a header was refused. Every variant displays as a short phrase with
/// at most a number in it, so a hostile peer cannot make a log line long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The bytes start with neither signature: the peer sent no header.
    NoSignature,
    /// No `\r\n` within the first 107 bytes.
    V1TooLong,
    /// The line ends in a bare `\n`.
    V1MissingCarriageReturn,
    /// A byte outside printable ASCII in the line.
    V1NotText,
    /// The protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    V1UnknownProtocol,
    /// Not exactly four fields after the protocol, or two spaces in a row.
    V1WrongFieldCount,
    /// An address that does not parse as the protocol's address family.
    V1BadAddress,
    /// A port that is not a decimal number from 0 to 65535.
    V1BadPort,
    /// A version other than 2 in the binary header.
    V2BadVersion(u8),
    /// A command other than `LOCAL` (0) or `PROXY` (1).
    V2BadCommand(u8),
    /// A family and protocol byte we do not serve (UDP, Unix, or undefined).
    V2UnsupportedFamily(u8),
    /// The header announces more than `MAX_V2_PAYLOAD` bytes.
    V2TooLong(usize),
    /// The announced length is too short for the family's addresses.
    V2AddressesTruncated(usize),
}

impl fmt::Display for Malformed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::NoSignature => write!(formatter, "no PROXY protocol signature"),
            Malformed::V1TooLong => write!(
                formatter,
                "v1 header longer than {MAX_V1_LENGTH} bytes without CRLF"
            ),
            Malformed::V1MissingCarriageReturn => write!(formatter, "v1 header ends without CR"),
            Malformed::V1NotText => write!(formatter, "v1 header is not printable ASCII"),
            Malformed::V1UnknownProtocol => {
                write!(formatter, "v1 protocol is not TCP4, TCP6 or UNKNOWN")
            }
            Malformed::V1WrongFieldCount => write!(formatter, "v1 header has the wrong fields"),
            Malformed::V1BadAddress => write!(formatter, "v1 address does not match its family"),
            Malformed::V1BadPort => write!(formatter, "v1 port is not a number from 0 to 65535"),
            Malformed::V2BadVersion(version) => write!(formatter, "v2 version {version}, not 2"),
            Malformed::V2BadCommand(command) => {
                write!(formatter, "v2 command {command}, not LOCAL or PROXY")
            }
            Malformed::V2UnsupportedFamily(family) => {
                write!(formatter, "v2 family/protocol 0x{family:02x} is not TCP")
            }
            Malformed::V2TooLong(length) => write!(
                formatter,
                "v2 header announces {length} bytes, more than {MAX_V2_PAYLOAD}"
            ),
            Malformed::V2AddressesTruncated(length) => write!(
                formatter,
                "v2 header announces {length} bytes, too few for its addresses"
            ),
        }
    }
}

/// Looks at the bytes received so far from a peer that must start with a
/// PROXY header. Call it again after every read until it stops answering
/// [`Parse::Incomplete`]; it never needs more than `MAX_V1_LENGTH` or
/// `V2_FIXED_LENGTH + MAX_V2_PAYLOAD` bytes to decide.
pub fn parse(received: &[u8]) -> Parse {
    match received.first() {
        None => Parse::Incomplete,
        Some(&byte) if byte == V1_SIGNATURE[0] => parse_v1(received),
        Some(&byte) if byte == V2_SIGNATURE[0] => parse_v2(received),
        Some(_) => Parse::Malformed(Malformed::NoSignature),
    }
}

/// True when `received` could still grow into `signature`: the bytes we have
/// match it as far as they go. Checked first, so a client that sends data
/// without a header is refused at its first byte that differs, not after
/// 107 bytes.
fn starts_like(received: &[u8], signature: &[u8]) -> bool {
    let shared = received.len().min(signature.len());
    received[..shared] == signature[..shared]
}

fn parse_v1(received: &[u8]) -> Parse {
    if !starts_like(received, V1_SIGNATURE) {
        return Parse::Malformed(Malformed::NoSignature);
    }
    // Only the first 107 bytes may hold the line end; the bytes after a
    // complete header are the client's and may contain anything.
    let window = &received[..received.len().min(MAX_V1_LENGTH)];
    let Some(newline) = window.iter().position(|&byte| byte == b'\n') else {
        return if received.len() >= MAX_V1_LENGTH {
            Parse::Malformed(Malformed::V1TooLong)
        } else {
            Parse::Incomplete
        };
    };
    let Some(line) = window[..newline].strip_suffix(b"\r") else {
        return Parse::Malformed(Malformed::V1MissingCarriageReturn);
    };
    match parse_v1_line(line) {
        Ok(command) => Parse::Complete {
            header_len: newline + 1,
            command,
        },
        Err(malformed) => Parse::Malformed(malformed),
    }
}

/// Parses the line between `PROXY ` and `\r\n`, signature included.
fn parse_v1_line(line: &[u8]) -> Result<Command, Malformed> {
    if !line.iter().all(|&byte| (b' '..=b'~').contains(&byte)) {
        return Err(Malformed::V1NotText);
    }
    // Printable ASCII is UTF-8, so this cannot fail; a failure would still
    // only refuse the header.
    let line = std::str::from_utf8(line).map_err(|_| Malformed::V1NotText)?;
    let rest = line.strip_prefix("PROXY ").ok_or(Malformed::NoSignature)?;
    let (protocol, addresses) = rest.split_once(' ').unwrap_or((rest, ""));
    let parse_ip: fn(&str) -> Option<IpAddr> = match protocol {
        // The specification lets a sender put anything after UNKNOWN, and
        // tells the receiver to ignore it.
        "UNKNOWN" => return Ok(Command::Local),
        "TCP4" => |text| text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        "TCP6" => |text| text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => return Err(Malformed::V1UnknownProtocol),
    };
    // Single spaces only: `split(' ')` turns a double space into an empty
    // field, which fails below like any other bad field.
    let fields: Vec<&str> = addresses.split(' ').collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(Malformed::V1WrongFieldCount);
    };
    let source = parse_ip(source).ok_or(Malformed::V1BadAddress)?;
    let destination = parse_ip(destination).ok_or(Malformed::V1BadAddress)?;
    Ok(Command::Proxy {
        source: SocketAddr::new(source, parse_port(source_port)?),
        destination: SocketAddr::new(destination, parse_port(destination_port)?),
    })
}

/// A decimal port: digits only (`u16::from_str` would also take a `+`).
fn parse_port(text: &str) -> Result<u16, Malformed> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Malformed::V1BadPort);
    }
    text.parse().map_err(|_| Malformed::V1BadPort)
}

/// Version 2's byte 13: the high nibble is the version, the low the command.
const V2_VERSION: u8 = 2;
const V2_COMMAND_LOCAL: u8 = 0;
const V2_COMMAND_PROXY: u8 = 1;

/// Version 2's byte 14: the high nibble is the address family, the low the
/// transport protocol. These are the combinations we serve.
const V2_UNSPEC: u8 = 0x00;
const V2_TCP_OVER_IPV4: u8 = 0x11;
const V2_TCP_OVER_IPV6: u8 = 0x21;

/// Address block sizes: two addresses, then two ports.
const V2_IPV4_ADDRESSES: usize = 4 + 4 + 2 + 2;
const V2_IPV6_ADDRESSES: usize = 16 + 16 + 2 + 2;

fn parse_v2(received: &[u8]) -> Parse {
    if !starts_like(received, &V2_SIGNATURE) {
        return Parse::Malformed(Malformed::NoSignature);
    }
    // Judge each fixed byte as soon as it arrives: a bad version need not
    // wait for the rest.
    if let Some(&version_command) = received.get(12) {
        let version = version_command >> 4;
        let command = version_command & 0x0F;
        if version != V2_VERSION {
            return Parse::Malformed(Malformed::V2BadVersion(version));
        }
        if command != V2_COMMAND_LOCAL && command != V2_COMMAND_PROXY {
            return Parse::Malformed(Malformed::V2BadCommand(command));
        }
    }
    let [
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        version_command,
        family,
        high,
        low,
        ..,
    ] = *received
    else {
        return Parse::Incomplete;
    };
    let payload_length = usize::from(u16::from_be_bytes([high, low]));
    if payload_length > MAX_V2_PAYLOAD {
        return Parse::Malformed(Malformed::V2TooLong(payload_length));
    }
    let header_len = V2_FIXED_LENGTH + payload_length;
    let Some(payload) = received.get(V2_FIXED_LENGTH..header_len) else {
        return Parse::Incomplete;
    };
    // LOCAL: the specification tells receivers to skip the payload whatever
    // the family byte says.
    if version_command & 0x0F == V2_COMMAND_LOCAL {
        return Parse::Complete {
            header_len,
            command: Command::Local,
        };
    }
    let command = match family {
        V2_UNSPEC => Ok(Command::Local),
        V2_TCP_OVER_IPV4 => v2_ipv4(payload),
        V2_TCP_OVER_IPV6 => v2_ipv6(payload),
        other => Err(Malformed::V2UnsupportedFamily(other)),
    };
    match command {
        Ok(command) => Parse::Complete { header_len, command },
        Err(malformed) => Parse::Malformed(malformed),
    }
}

/// Source address, destination address, source port, destination port, in
/// network byte order. Whatever follows is TLVs, skipped.
fn v2_ipv4(payload: &[u8]) -> Result<Command, Malformed> {
    let Some(addresses) = payload.get(..V2_IPV4_ADDRESSES) else {
        return Err(Malformed::V2AddressesTruncated(payload.len()));
    };
    let ip = |at: usize| {
        Ipv4Addr::new(
            addresses[at],
            addresses[at + 1],
            addresses[at + 2],
            addresses[at + 3],
        )
    };
    let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
    Ok(Command::Proxy {
        source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
        destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
    })
}

fn v2_ipv6(payload: &[u8]) -> Result<Command, Malformed> {
    let Some(addresses) = payload.get(..V2_IPV6_ADDRESSES) else {
        return Err(Malformed::V2AddressesTruncated(payload.len()));
    };
    let ip = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&addresses[at..at + 16]);
        Ipv6Addr::from(octets)
    };
    let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
    Ok(Command::Proxy {
        source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
        destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
    })
}
