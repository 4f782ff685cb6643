//! `--max-connections-per-ip`: how many connections one address may hold.
//!
//! Without it, one host trickling a byte at a time can hold every slot
//! until the read timeout. Addresses are grouped as operators usually group
//! them: an IPv4 address stands alone, while an IPv6 host typically owns a
//! whole /64, so all of a /64 counts as one.
//!
//! The counts live in a map with one entry per group currently connected:
//! an entry goes when its count drops to zero, so memory follows the
//! clients connected now, not every client ever seen.
//!
//! The limit is global, also with `--workers N`: the workers then share one
//! map behind a mutex ([`PerIp::Shared`]). It is touched only at accept and
//! at close, never on the read/write path, and each touch is one hash map
//! operation: the lock is held for well under a microsecond, so even at
//! tens of thousands of connections per second per worker it is almost
//! always uncontended, and an uncontended lock is one atomic
//! compare-and-swap. A single server keeps its map to itself
//! ([`PerIp::Own`]) and takes no lock at all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit the limit counts: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum AddressGroup {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix(u64),
}

impl AddressGroup {
    pub(crate) fn of(ip: IpAddr) -> AddressGroup {
        match ip {
            IpAddr::V4(v4) => AddressGroup::V4(v4),
            // An IPv4 client reaching a dual-stack socket is still one IPv4
            // host. (Our IPv6 listeners are v6-only, but an embedder's
            // traffic may come through a proxy that maps addresses.)
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressGroup::V4(v4),
                None => AddressGroup::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for AddressGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressGroup::V4(v4) => write!(f, "{v4}"),
            AddressGroup::V6Prefix(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64))
            }
        }
    }
}

/// Connections held per address group, against a limit.
#[derive(Debug)]
pub(crate) struct PerAddress {
    /// 0: no limit, and nothing is counted.
    limit: usize,
    held: HashMap<AddressGroup, usize>,
}

impl PerAddress {
    pub(crate) fn new(limit: usize) -> Self {
        PerAddress {
            limit,
            held: HashMap::new(),
        }
    }

    /// Counts one more connection from `ip`, unless its group already holds
    /// the limit: then returns that group, and nothing is counted.
    pub(crate) fn admit(&mut self, ip: IpAddr) -> Result<(), AddressGroup> {
        if self.limit == 0 {
            return Ok(());
        }
        let group = AddressGroup::of(ip);
        let held = self.held.entry(group).or_insert(0);
        if *held >= self.limit {
            return Err(group);
        }
        *held += 1;
        Ok(())
    }

    /// A connection from `ip` that [`admit`](Self::admit) counted has closed.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let group = AddressGroup::of(ip);
        if let Some(held) = self.held.get_mut(&group) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&group);
            }
        }
    }

    /// How many groups are counted now (for the tests).
    #[cfg(test)]
    fn groups(&self) -> usize {
        self.held.len()
    }
}

/// Proof that one connection is counted against its address group, from
/// [`PerIp::charge`].
///
/// Not `Clone`, and [`PerIp::discharge`] takes it by value: a connection
/// releases what it was charged, once. That matters behind a load balancer
/// (`--proxy-protocol`), where the address charged is not the socket's
/// peer: nothing is charged at accept, the client's address from the PROXY
/// header is charged once the header has arrived, and a connection that
/// closes before (a bad header, a timeout) or that was refused holds no
/// charge and so releases nothing.
///
/// It holds no address: the address charged is always the connection's
/// `Name::peer` at the time (the socket's peer, or the client a header
/// named before the charge), and the peer never changes after it. Keeping
/// the address out saves 17 bytes in every idle connection, where
/// docs/benchmarks.md counts each one.
#[derive(Debug)]
#[must_use = "a charge must be kept and discharged when the connection closes"]
pub(crate) struct Charge(());

/// The per-address counts of one server, or the counts all workers share.
#[derive(Debug)]
pub(crate) enum PerIp {
    /// One server alone: no lock.
    Own(PerAddress),
    /// One map for every worker, so that the limit stays global.
    Shared(Arc<Mutex<PerAddress>>),
}

impl PerIp {
    /// Counts for one server alone.
    pub(crate) fn own(limit: usize) -> PerIp {
        PerIp::Own(PerAddress::new(limit))
    }

    /// A map to share between workers: clone the `Arc` into each.
    pub(crate) fn shared(limit: usize) -> Arc<Mutex<PerAddress>> {
        Arc::new(Mutex::new(PerAddress::new(limit)))
    }

    /// See [`PerAddress::admit`].
    pub(crate) fn admit(&mut self, ip: IpAddr) -> Result<(), AddressGroup> {
        match self {
            PerIp::Own(counts) => counts.admit(ip),
            PerIp::Shared(counts) => lock(counts).admit(ip),
        }
    }

    /// See [`PerAddress::release`].
    pub(crate) fn release(&mut self, ip: IpAddr) {
        match self {
            PerIp::Own(counts) => counts.release(ip),
            PerIp::Shared(counts) => lock(counts).release(ip),
        }
    }

    /// Counts one more connection from `ip`, like [`admit`](Self::admit),
    /// and returns the charge to hand back when it closes.
    pub(crate) fn charge(&mut self, ip: IpAddr) -> Result<Charge, AddressGroup> {
        self.admit(ip).map(|()| Charge(()))
    }

    /// A charged connection has closed: release `ip`, the address it was
    /// charged for (its peer).
    pub(crate) fn discharge(&mut self, charge: Charge, ip: IpAddr) {
        let Charge(()) = charge;
        self.release(ip);
    }
}

/// Locks the shared map. A poisoned lock means another worker panicked
/// between two lines of `admit` or `release`, which hold no invariant
/// beyond the counts themselves: at worst one count is off by one, which
/// beats taking down every other worker, so the map is used as it is.
fn lock(counts: &Mutex<PerAddress>) -> MutexGuard<'_, PerAddress> {
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn ipv4_counts_each_address_alone() {
        assert_eq!(
            AddressGroup::of(ip("192.0.2.1")),
            AddressGroup::of(ip("192.0.2.1"))
        );
        assert_ne!(
            AddressGroup::of(ip("192.0.2.1")),
            AddressGroup::of(ip("192.0.2.2"))
        );
    }

    #[test]
    fn ipv6_counts_a_whole_slash_64_as_one() {
        let group = AddressGroup::of(ip("2001:db8:1:2::1"));
        assert_eq!(group, AddressGroup::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(group, AddressGroup::of(ip("2001:db8:1:3::1")));
        assert_eq!(group.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_host() {
        assert_eq!(
            AddressGroup::of(ip("::ffff:192.0.2.1")),
            AddressGroup::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn over_the_limit_is_refused_and_other_groups_are_not_affected() {
        let mut per_address = PerAddress::new(2);
        assert_eq!(per_address.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(per_address.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(
            per_address.admit(ip("192.0.2.1")),
            Err(AddressGroup::of(ip("192.0.2.1")))
        );
        assert_eq!(per_address.admit(ip("192.0.2.2")), Ok(()));
        per_address.release(ip("192.0.2.1"));
        assert_eq!(per_address.admit(ip("192.0.2.1")), Ok(()), "a slot freed");
    }

    #[test]
    fn memory_follows_the_groups_connected_now() {
        let mut per_address = PerAddress::new(1);
        for last in 0..=255u8 {
            let address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, last));
            assert_eq!(per_address.admit(address), Ok(()));
            per_address.release(address);
        }
        assert_eq!(per_address.groups(), 0);
    }

    #[test]
    fn workers_sharing_one_map_share_one_limit() {
        let shared = PerIp::shared(1);
        let mut first = PerIp::Shared(Arc::clone(&shared));
        let mut second = PerIp::Shared(Arc::clone(&shared));
        assert_eq!(first.admit(ip("192.0.2.1")), Ok(()));
        assert!(second.admit(ip("192.0.2.1")).is_err(), "the limit is global");
        first.release(ip("192.0.2.1"));
        assert_eq!(second.admit(ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn a_charge_releases_the_address_it_was_charged_for_and_no_other() {
        // Behind a balancer: every socket comes from 192.0.2.100, and the
        // headers name the clients.
        let mut per_ip = PerIp::own(1);
        let first = per_ip.charge(ip("203.0.113.7")).expect("first client");
        let second = per_ip.charge(ip("203.0.113.8")).expect("another client");
        assert!(
            per_ip.charge(ip("203.0.113.7")).is_err(),
            "the header's address is at its limit"
        );
        // The balancer itself was never charged, so it stays free...
        let balancer = per_ip
            .charge(ip("192.0.2.100"))
            .expect("the balancer's own check");
        per_ip.discharge(balancer, ip("192.0.2.100"));
        // ...and a close releases the client, not the balancer.
        per_ip.discharge(first, ip("203.0.113.7"));
        let again = per_ip.charge(ip("203.0.113.7")).expect("freed by the close");
        per_ip.discharge(again, ip("203.0.113.7"));
        per_ip.discharge(second, ip("203.0.113.8"));
        let PerIp::Own(counts) = &per_ip else {
            panic!("own counts")
        };
        assert_eq!(counts.groups(), 0, "every charge released exactly once");
    }

    #[test]
    fn a_refused_charge_holds_nothing() {
        let mut per_ip = PerIp::own(1);
        let held = per_ip.charge(ip("203.0.113.7")).expect("first");
        for _ in 0..3 {
            assert!(per_ip.charge(ip("203.0.113.7")).is_err());
        }
        per_ip.discharge(held, ip("203.0.113.7"));
        // Three refusals charged nothing: one release frees the address.
        let PerIp::Own(counts) = &per_ip else {
            panic!("own counts")
        };
        assert_eq!(counts.groups(), 0);
    }

    #[test]
    fn zero_means_no_limit_and_no_counting() {
        let mut per_address = PerAddress::new(0);
        for _ in 0..1000 {
            assert_eq!(per_address.admit(ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(per_address.groups(), 0);
    }
}
