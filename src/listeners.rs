//! Binding the listening sockets.
//!
//! `std::net::TcpListener::bind` fixes the backlog at 128 and sets no
//! options, so the sockets are built with socket2 and every option the
//! server depends on is set here explicitly: mio's `from_std` sets none.

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
pub(crate) fn bind_all(specs: &[String], backlog: u32) -> io::Result<Vec<Listener>> {
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
            match bind_one(address, backlog) {
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

fn bind_one(address: SocketAddr, backlog: u32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    // Restart at once after Ctrl-C, even with old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
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
        let error = bind_all(std::slice::from_ref(&spec), 16).expect_err("should fail");
        assert_eq!(
            error.to_string(),
            format!("cannot listen on {spec}: address already in use")
        );
    }

    #[test]
    fn port_zero_binds_a_real_port() {
        let listeners = bind_all(&["127.0.0.1:0".into()], 16).expect("bind");
        assert_eq!(listeners.len(), 1);
        assert_ne!(listeners[0].address.port(), 0);
    }

    #[test]
    fn localhost_port_zero_shares_one_port() {
        let listeners = bind_all(&["localhost:0".into()], 16).expect("bind");
        let first = listeners[0].address.port();
        assert!(listeners.iter().all(|listener| listener.address.port() == first));
    }
}
