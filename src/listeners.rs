//! Binding the listening sockets.
//!
//! `std::net::TcpListener::bind` fixes the backlog at 128 and sets no
//! options, so the sockets are built with socket2 and every option the
//! server depends on is set here explicitly: mio's `from_std` sets none.
//!
//! Also here: [`adopt`], which takes a socket someone else bound (systemd's
//! socket activation) and makes it fit for the loop.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};

use log::warn;

use crate::error::describe;
use socket2::{Domain, Protocol, Socket, Type};

/// One bound, listening, non-blocking socket.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) socket: mio::net::TcpListener,
    pub(crate) address: SocketAddr,
}

/// Resolves and binds every address of every `host:port` in `specs`.
///
/// A host name binds all the addresses it resolves to, so that
/// `nc localhost 7342` works whichever of 127.0.0.1 and ::1 the client
/// tries first. With port 0, the addresses of one entry share the port the
/// first of them got. An address that resolves but does not exist here (IPv6
/// disabled, say) is skipped with a warning; any other failure is an error,
/// and so is binding nothing at all.
///
/// `reuse_port` sets `SO_REUSEPORT` (see [`bind_one`]).
pub(crate) fn bind_all(specs: &[String], backlog: u32, reuse_port: bool) -> io::Result<Vec<Listener>> {
    let mut listeners: Vec<Listener> = Vec::new();
    for spec in specs {
        let mut addresses: Vec<SocketAddr> = spec
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {spec}: {}", describe(&e))))?
            .collect();
        addresses.dedup();
        let mut shared_port = None;
        for mut address in addresses {
            if listeners.iter().any(|listener| listener.address == address) {
                continue;
            }
            let port_was_chosen = address.port() == 0 && shared_port.is_some();
            if let (0, Some(port)) = (address.port(), shared_port) {
                address.set_port(port);
            }
            match bind_one(address, backlog, reuse_port) {
                Ok(listener) => {
                    shared_port.get_or_insert(listener.address.port());
                    listeners.push(listener);
                }
                // The address does not exist on this machine, or (port 0)
                // the port the first address got is taken on this one: skip it.
                Err(e) if is_unavailable(&e) || port_was_chosen => {
                    warn!("skipping {address} (from {spec}): {}", describe(&e));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {address}: {}", describe(&e)),
                    ));
                }
            }
        }
    }
    if listeners.is_empty() {
        return Err(io::Error::new(
            ErrorKind::AddrNotAvailable,
            format!("cannot listen on {}: no address could be bound", specs.join(", ")),
        ));
    }
    Ok(listeners)
}

/// Binds exactly `addresses` (real ports, no 0), with `SO_REUSEPORT`: how
/// the second and later workers join the sockets the first one bound. Any
/// failure is an error: a worker without one of the addresses would serve
/// a different set than the others.
pub(crate) fn bind_each(addresses: &[SocketAddr], backlog: u32) -> io::Result<Vec<Listener>> {
    addresses
        .iter()
        .map(|&address| {
            bind_one(address, backlog, true).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {address}: {}", describe(&e)))
            })
        })
        .collect()
}

/// Binds and listens on one address.
///
/// `SO_REUSEPORT` lets several sockets bind the same address and port, and
/// the kernel then spreads incoming connections between them by a hash of
/// each connection's addresses and ports: that is how `--workers N` gives
/// each worker its own listening socket. It is set only for workers,
/// because it also takes away a safety net: with it, a second revecho
/// started on the same port by mistake binds silently and takes half the
/// traffic, instead of failing with "address already in use". (Linux
/// allows the shared bind only when every socket on the port set the
/// option, as the same user, so a single revecho, without it, still
/// refuses, and is refused by, any other.)
fn bind_one(address: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    // Restart at once after Ctrl-C, even with old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        // Keep ::1 and 127.0.0.1 as two separate listeners on every system,
        // whatever the system default for dual-stack sockets.
        socket.set_only_v6(true)?;
    }
    socket.bind(&address.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    // Non-blocking, or `accept` would stall the whole loop.
    socket.set_nonblocking(true)?;
    let std_listener: std::net::TcpListener = socket.into();
    let address = std_listener.local_addr()?;
    let socket = mio::net::TcpListener::from_std(std_listener);
    Ok(Listener { socket, address })
}

/// Takes a listening socket that was bound elsewhere (systemd's socket
/// activation hands over blocking ones) and makes it non-blocking, which
/// mio's `from_std` does not do, so that `accept` can never stall the loop.
pub(crate) fn adopt(listener: std::net::TcpListener) -> io::Result<Listener> {
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let socket = mio::net::TcpListener::from_std(listener);
    Ok(Listener { socket, address })
}

fn is_unavailable(error: &io::Error) -> bool {
    error.kind() == ErrorKind::AddrNotAvailable || error.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_is_one_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // Without SO_REUSEPORT on the first socket the second bind fails.
        let spec = taken.local_addr().expect("address").to_string();
        let error = bind_all(std::slice::from_ref(&spec), 16, false).expect_err("should fail");
        assert_eq!(
            error.to_string(),
            format!("cannot listen on {spec}: address already in use")
        );
    }

    #[test]
    fn workers_share_a_port_only_when_every_socket_reuses_it() {
        let first = bind_all(&["127.0.0.1:0".into()], 16, true).expect("bind");
        let address = first[0].address;
        let second = bind_each(&[address], 16).expect("a second worker joins");
        assert_eq!(second[0].address, address);
        // A single server does not set SO_REUSEPORT, so it cannot join.
        let error = bind_all(&[address.to_string()], 16, false).expect_err("refused");
        assert!(error.to_string().ends_with("address already in use"), "{error}");
    }

    #[test]
    fn a_worker_cannot_join_a_single_server() {
        let single = bind_all(&["127.0.0.1:0".into()], 16, false).expect("bind");
        let error = bind_each(&[single[0].address], 16).expect_err("refused");
        assert!(error.to_string().ends_with("address already in use"), "{error}");
    }

    #[test]
    fn an_adopted_listener_does_not_block() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = std_listener.local_addr().expect("address");
        let listener = adopt(std_listener).expect("adopt");
        assert_eq!(listener.address, address);
        let error = listener.socket.accept().expect_err("nobody is waiting");
        assert_eq!(error.kind(), ErrorKind::WouldBlock);
    }

    #[test]
    fn port_zero_binds_a_real_port() {
        let listeners = bind_all(&["127.0.0.1:0".into()], 16, false).expect("bind");
        assert_eq!(listeners.len(), 1);
        assert_ne!(listeners[0].address.port(), 0);
    }

    #[test]
    fn localhost_port_zero_shares_one_port() {
        let listeners = bind_all(&["localhost:0".into()], 16, false).expect("bind");
        let first = listeners[0].address.port();
        assert!(listeners.iter().all(|listener| listener.address.port() == first));
    }
}
