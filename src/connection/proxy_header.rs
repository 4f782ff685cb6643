//! The `ReadingProxyHeader` state: with `--proxy-protocol`, a load
//! balancer sends a PROXY header before the client's bytes, and this step
//! reads it, learns the real client's address from it, and hands over to
//! `Receiving`.
//!
//! It lives apart from `receive` on purpose: the receive path stays the
//! same with or without a balancer in front, and the only thing the two
//! share is the hand-over. Bytes that arrived in the same read as the
//! header are the start of the message, so they go to `Receiving` as
//! already received. Framing must see them even if no other byte ever
//! arrives, so they are scanned here, once: a whole line among them goes
//! straight to `Sending`. A header that arrives alone is not a message:
//! `Receiving` starts empty and waits for more, in every framing.

use std::fmt;

use log::{debug, trace};

use super::{
    Budget, CloseReason, Context, Ending, Event, Name, Next, Step, Times, bytes, failed, failure,
    keep_first_line, read_size, shut_down_writing, would_block_on,
};
use crate::error::{interrupted, would_block};
use crate::framing::{self, Scan};
use crate::observer::{self, Operation};
use crate::proxy_protocol::{self, Command, Malformed, Parse};
use crate::transport::Transport;

/// Why a connection that had to start with a PROXY header did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// The bytes are not a PROXY header, or a broken one.
    Malformed(Malformed),
    /// The peer closed before a whole header arrived (or sent nothing).
    EndedEarly,
    /// The peer is outside `--proxy-from`: it may not name a client.
    UntrustedPeer,
}

impl fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFault::Malformed(malformed) => write!(f, "{malformed}"),
            HeaderFault::EndedEarly => f.write_str("the peer closed before a whole header"),
            HeaderFault::UntrustedPeer => f.write_str("the peer is not in --proxy-from"),
        }
    }
}

/// ReadingProxyHeader: read until the bytes hold a whole header, a broken
/// one, or the kernel has no more for now. The header is read under the
/// same limits as a message: its bytes count towards `max_message`, and the
/// read timeout runs from accept, so a balancer (or a client posing as
/// one) that trickles a header gets no more time than a slow message.
pub(super) fn read_proxy_header(
    name: &mut Name,
    received: &mut Vec<u8>,
    times: &mut Times,
    io: &mut impl Transport,
    cx: &mut Context,
    budget: &mut Budget,
) -> Step {
    let config = cx.config;
    loop {
        if !budget.take_call() {
            return Step::Yield;
        }
        let want = read_size(config, received.len(), budget, cx.scratch.len());
        match io.read(&mut cx.scratch[..want]) {
            Ok(0) => {
                let id = name.id;
                cx.observe(|| observer::Event::Read {
                    connection: id,
                    bytes: 0,
                });
                debug!(
                    "{name}: end of stream after {} of a PROXY header",
                    bytes(received.len())
                );
                return bad_header(HeaderFault::EndedEarly);
            }
            Ok(n) => {
                received.extend_from_slice(&cx.scratch[..n]);
                budget.bytes -= n;
                cx.stats.bytes_in(n);
                times.progress(cx.now);
                trace!("{name}: read: {} ({} buffered)", bytes(n), received.len());
                let id = name.id;
                cx.observe(|| observer::Event::Read {
                    connection: id,
                    bytes: n,
                });
                match proxy_protocol::parse(received) {
                    // A header split across reads: wait for the rest. The
                    // parser says `Malformed` once a header could no longer
                    // fit its bounds, so this wait is bounded too.
                    Parse::Incomplete if received.len() > config.max_message => {
                        debug!(
                            "{name}: more than {} without a whole PROXY header",
                            bytes(config.max_message)
                        );
                        return shut_down_writing(*name, io, cx, Ending::Refused, false);
                    }
                    Parse::Incomplete => {}
                    Parse::Malformed(malformed) => {
                        debug!("{name}: bad PROXY header: {malformed}");
                        return bad_header(HeaderFault::Malformed(malformed));
                    }
                    Parse::Complete { header_len, command } => {
                        let rest = received.split_off(header_len);
                        return on_header(name, command, rest, io, cx);
                    }
                }
            }
            // A header that arrived in pieces: the rest is still on its way.
            Err(e) if would_block(&e) => {
                trace!("{name}: read: would block ({} of a PROXY header)", received.len());
                cx.observe(|| would_block_on(*name, Operation::Read));
                return Step::Wait;
            }
            Err(e) if interrupted(&e) => {
                trace!("{name}: read: interrupted, retrying");
            }
            Err(e) => return failed(failure(*name, "read", &e)),
        }
    }
}

/// A whole header arrived: take the client's address from it, ask whether
/// that client may be served, and hand `rest`, the bytes after the header,
/// to the message.
fn on_header(
    name: &mut Name,
    command: Command,
    mut rest: Vec<u8>,
    io: &mut impl Transport,
    cx: &mut Context,
) -> Step {
    match command {
        Command::Proxy { source, .. } => {
            name.via = name.peer;
            name.peer = Some(source.into());
            debug!("{name}: PROXY header names the client");
        }
        // A balancer's health check: it is its own client.
        Command::Local => {
            debug!("{name}: PROXY header without a client (LOCAL or UNKNOWN): serving the balancer")
        }
    }
    if let (Some(client), Some(admit)) = (name.peer, cx.admission.as_mut())
        && !admit(client.ip())
    {
        return Step::Move(Event::ClientRefused, Next::Closed(CloseReason::PerIpLimit));
    }
    let config = cx.config;
    match framing::scan(config.framing, &rest, 0, config.max_message) {
        // Usually nothing came with the header, or not a whole message:
        // read the rest in `Receiving`. Burst and eof framing always end
        // up here: where their message ends is not in the bytes.
        Scan::Incomplete => Step::Move(
            Event::HeaderRead,
            Next::Receiving {
                searched: rest.len(),
                received: rest,
            },
        ),
        // A whole line came with the header; no read may ever follow, so
        // reply now.
        Scan::Complete { len } => {
            keep_first_line(*name, &mut rest, len, cx.stats);
            Step::Move(
                Event::MessageComplete,
                Next::Sending {
                    reply: framing::into_reply(config.framing, rest),
                    peer_finished: false,
                },
            )
        }
        Scan::Oversize => {
            debug!(
                "{name}: more than {} without a complete message",
                bytes(config.max_message)
            );
            shut_down_writing(*name, io, cx, Ending::Refused, false)
        }
    }
}

fn bad_header(fault: HeaderFault) -> Step {
    Step::Move(Event::BadHeader, Next::Closed(CloseReason::ProxyError(fault)))
}
