//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), for
//! `--proxy-from`: only peers inside one of the ranges may send a PROXY
//! header. Anyone else could otherwise forge the client address it carries.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network address and how many of its leading bits name the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--proxy-from` value is not a CIDR range. Displays as one line
/// that says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    BadAddress(String),
    /// The part after `/` is not a number from 0 to 32 (IPv4) or 128 (IPv6).
    BadPrefix(String),
    /// Bits are set after the prefix: `10.0.0.1/8` is ambiguous, the range
    /// it most likely means is `10.0.0.0/8`.
    HostBitsSet {
        /// The value as given.
        given: String,
        /// The range with the host bits cleared.
        suggestion: Cidr,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress(given) => {
                write!(formatter, "{given:?} is not an IP address or CIDR range")
            }
            CidrError::BadPrefix(given) => write!(
                formatter,
                "{given:?} has a bad prefix length: 0 to 32 for IPv4, 0 to 128 for IPv6"
            ),
            CidrError::HostBitsSet { given, suggestion } => write!(
                formatter,
                "{given:?} has bits set after the prefix length; did you mean {suggestion}?"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The range's first address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits name the network.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `address` is inside the range. An IPv4 address that
    /// arrives IPv4-mapped (`::ffff:10.1.2.3`, as a dual-stack `[::]`
    /// listener reports IPv4 clients) matches the IPv4 ranges too.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match (self.network, address) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => address,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = mask_u32(self.prefix);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = mask_u128(self.prefix);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits set. A shift by the full width overflows, hence
/// `checked_shl`: `/0` is the empty mask, which every address matches.
fn mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `address/prefix`, or a bare address meaning that one host (`/32` or
    /// `/128`).
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::BadAddress(text.to_owned()))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            // Digits only: `u8::from_str` would also take "+8".
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                match digits.parse::<u8>() {
                    Ok(prefix) if prefix <= width => prefix,
                    _ => return Err(CidrError::BadPrefix(text.to_owned())),
                }
            }
            Some(_) => return Err(CidrError::BadPrefix(text.to_owned())),
        };
        let cleared = match network {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask_u32(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask_u128(prefix)).into()),
        };
        let cidr = Cidr {
            network: cleared,
            prefix,
        };
        if cleared != network {
            return Err(CidrError::HostBitsSet {
                given: text.to_owned(),
                suggestion: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn parses_ipv4_and_ipv6_ranges() {
        let range = cidr("10.0.0.0/8");
        assert_eq!(range.network(), ip("10.0.0.0"));
        assert_eq!(range.prefix(), 8);
        let range = cidr("2001:db8::/32");
        assert_eq!(range.network(), ip("2001:db8::"));
        assert_eq!(range.prefix(), 32);
    }

    #[test]
    fn a_bare_address_is_one_host() {
        assert_eq!(cidr("127.0.0.1").prefix(), 32);
        assert_eq!(cidr("::1").prefix(), 128);
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
    }

    #[test]
    fn ipv4_range_contains_exactly_its_addresses() {
        let range = cidr("192.168.4.0/22");
        assert!(range.contains(ip("192.168.4.0")));
        assert!(range.contains(ip("192.168.7.255")));
        assert!(!range.contains(ip("192.168.3.255")));
        assert!(!range.contains(ip("192.168.8.0")));
    }

    #[test]
    fn ipv6_range_contains_exactly_its_addresses() {
        let range = cidr("2001:db8:abcd::/48");
        assert!(range.contains(ip("2001:db8:abcd::1")));
        assert!(range.contains(ip("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff")));
        assert!(!range.contains(ip("2001:db8:abce::")));
        assert!(!range.contains(ip("2001:db8:abcc:ffff::")));
    }

    #[test]
    fn prefix_zero_contains_its_whole_family() {
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("::/0").contains(ip("2001:db8::7")));
        assert!(!cidr("::/0").contains(ip("203.0.113.7")));
    }

    #[test]
    fn full_prefix_contains_one_address() {
        assert!(cidr("203.0.113.7/32").contains(ip("203.0.113.7")));
        assert!(!cidr("203.0.113.7/32").contains(ip("203.0.113.6")));
        assert!(cidr("2001:db8::7/128").contains(ip("2001:db8::7")));
        assert!(!cidr("2001:db8::7/128").contains(ip("2001:db8::6")));
    }

    #[test]
    fn ipv4_mapped_client_matches_ipv4_range() {
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!cidr("127.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        // Only the mapped form: ::1 is not 127.0.0.1, nor an IPv4 address.
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
    }

    #[test]
    fn ipv6_range_never_contains_plain_ipv4() {
        assert!(!cidr("::ffff:0:0/96").contains(ip("127.0.0.1")));
    }

    #[test]
    fn rejects_bad_addresses() {
        for text in ["", "/8", "10.0.0/8", "10.0.0.256/32", "example.com/8", "::g/64"] {
            assert_eq!(
                text.parse::<Cidr>(),
                Err(CidrError::BadAddress(text.to_owned())),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_bad_prefixes() {
        for text in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.0/256",
        ] {
            assert_eq!(
                text.parse::<Cidr>(),
                Err(CidrError::BadPrefix(text.to_owned())),
                "{text}"
            );
        }
    }

    #[test]
    fn host_bits_after_the_prefix_are_refused_with_the_likely_range() {
        let error = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"10.0.0.1/8\" has bits set after the prefix length; did you mean 10.0.0.0/8?"
        );
        let error = "2001:db8::1/32".parse::<Cidr>().unwrap_err();
        assert!(
            error.to_string().ends_with("did you mean 2001:db8::/32?"),
            "{error}"
        );
    }

    #[test]
    fn displays_as_parsed() {
        for text in ["10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "::1/128"] {
            assert_eq!(cidr(text).to_string(), text);
        }
    }
}
