//! The connection's state diagram, written from the code.
//!
//! [`mermaid`] and [`dot`] print the same picture in two languages: Mermaid
//! `stateDiagram-v2` text, which code hosts draw inline, and Graphviz DOT
//! text, which `scripts/render-state-machine.sh` renders to the SVG in
//! `docs/`. Both are built from what the loop itself runs on:
//!
//! - every arrow is a row of `TRANSITIONS`, the table that `apply` checks
//!   each move against;
//! - what a state is registered for is [`StateKind::interest`], the answer
//!   the loop's `settle` registers;
//! - an arrow drawn as a reset is one [`may_cut_off_reply`] says can leave
//!   a reply part-written, which a test here checks against real
//!   connections driven into each of those closes.
//!
//! So the diagram cannot describe a machine the code does not run:
//! `tests/state_machine_docs.rs` regenerates both texts and compares them
//! with `docs/state-machine.md` and `docs/state-machine.dot`.
//!
//! Rows with the same two states and the same kind of close share one
//! arrow, labelled with all their events, so the picture stays readable.

use std::fmt::Write;

use mio::Interest;

use super::{Event, StateKind, TRANSITIONS};

/// Every state, in the order a connection meets them.
pub const STATES: [StateKind; 5] = [
    StateKind::ReadingProxyHeader,
    StateKind::Receiving,
    StateKind::Sending,
    StateKind::Lingering,
    StateKind::Closed,
];

/// Whether a close by `event` out of `from` can leave a reply part-written.
/// The loop closes such a connection with a reset (SO_LINGER 0), so that the
/// client cannot take the part it got for a whole reply. Only `Sending`
/// holds a reply, and only `ReplyWritten` says all of it went out; a
/// `Failed` out of `Sending` is orderly in the one case where the reply was
/// complete and the `shutdown(Write)` after it failed.
pub fn may_cut_off_reply(from: StateKind, event: Event) -> bool {
    from == StateKind::Sending && event != Event::ReplyWritten
}

/// What a connection in `state` is registered for, as the diagram shows it.
pub fn registration(state: StateKind) -> &'static str {
    match state.interest() {
        Some(interest) if interest == Interest::READABLE => "registered READABLE",
        Some(interest) if interest == Interest::WRITABLE => "registered WRITABLE",
        Some(_) => "registered READABLE | WRITABLE",
        None => "deregistered, slot freed",
    }
}

/// One arrow: the rows of [`TRANSITIONS`] it stands for.
struct Arrow {
    from: StateKind,
    to: StateKind,
    events: Vec<Event>,
    reset: bool,
}

/// The rows of [`TRANSITIONS`], grouped into arrows in table order.
fn arrows() -> Vec<Arrow> {
    let mut arrows: Vec<Arrow> = Vec::new();
    for &(from, event, to) in TRANSITIONS {
        let reset = to == StateKind::Closed && may_cut_off_reply(from, event);
        match arrows
            .iter_mut()
            .find(|arrow| arrow.from == from && arrow.to == to && arrow.reset == reset)
        {
            Some(arrow) => arrow.events.push(event),
            None => arrows.push(Arrow {
                from,
                to,
                events: vec![event],
                reset,
            }),
        }
    }
    arrows
}

fn events_joined(events: &[Event], separator: &str) -> String {
    events
        .iter()
        .map(|event| format!("{event:?}"))
        .collect::<Vec<_>>()
        .join(separator)
}

/// The diagram as Mermaid `stateDiagram-v2` text.
pub fn mermaid() -> String {
    let mut out = String::new();
    out.push_str("stateDiagram-v2\n");
    out.push_str("    direction LR\n");
    for state in STATES {
        let _ = writeln!(out, "    {state:?}: {}", registration(state));
    }
    out.push_str("    [*] --> Receiving: accept\n");
    out.push_str("    [*] --> ReadingProxyHeader: proxy_protocol\n");
    for arrow in arrows() {
        let events = events_joined(&arrow.events, ", ");
        let reset = if arrow.reset { " (reset)" } else { "" };
        let _ = writeln!(out, "    {:?} --> {:?}: {events}{reset}", arrow.from, arrow.to);
    }
    out.push_str("    Closed --> [*]\n");
    out
}

/// The diagram as Graphviz DOT text.
pub fn dot() -> String {
    let mut out = String::new();
    out.push_str("// The connection state machine, written by revecho::internals::diagram::dot()\n");
    out.push_str("// from TRANSITIONS in src/connection.rs. Do not edit: run\n");
    out.push_str("// scripts/render-state-machine.sh, which also renders docs/state-machine.svg.\n");
    out.push_str("digraph connection {\n");
    out.push_str("    rankdir=LR;\n");
    out.push_str("    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("    edge [fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("    accept [shape=point, label=\"\"];\n");
    for state in STATES {
        let border = if state == StateKind::Closed {
            ", peripheries=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    {state:?} [label=\"{state:?}\\n{}\"{border}];",
            registration(state)
        );
    }
    out.push_str("    accept -> Receiving [label=\"accept\"];\n");
    out.push_str("    accept -> ReadingProxyHeader [label=\"proxy_protocol\"];\n");
    for arrow in arrows() {
        let events = events_joined(&arrow.events, "\\n");
        let (label, style) = if arrow.reset {
            (
                format!("{events}\\n(reset)"),
                ", style=dashed, color=red, fontcolor=red",
            )
        } else {
            (events, "")
        };
        let _ = writeln!(
            out,
            "    {:?} -> {:?} [label=\"{label}\"{style}];",
            arrow.from, arrow.to
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::{self, ErrorKind};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::connection::{Connection, Context, Name, scratch_len};
    use crate::stats::Stats;
    use crate::transport::Transport;
    use crate::{Config, Framing};

    /// Every state the table names is drawn, and every state drawn is in
    /// the table.
    #[test]
    fn the_diagram_draws_exactly_the_states_of_the_table() {
        for &(from, _, to) in TRANSITIONS {
            assert!(STATES.contains(&from) && STATES.contains(&to));
        }
        for state in STATES {
            assert!(
                TRANSITIONS
                    .iter()
                    .any(|&(from, _, to)| from == state || to == state),
                "{state:?} is in no transition"
            );
        }
    }

    #[test]
    fn every_row_of_the_table_is_an_arrow_of_both_diagrams() {
        let mermaid = mermaid();
        let dot = dot();
        let arrows = arrows();
        for &(from, event, to) in TRANSITIONS {
            let arrow = arrows
                .iter()
                .find(|arrow| arrow.from == from && arrow.to == to && arrow.events.contains(&event))
                .unwrap_or_else(|| panic!("no arrow for {from:?} --{event:?}--> {to:?}"));
            let mermaid_line = format!("{from:?} --> {to:?}: {}", events_joined(&arrow.events, ", "));
            assert!(
                mermaid.contains(&mermaid_line),
                "{mermaid_line} not in\n{mermaid}"
            );
            let dot_line = format!(
                "{from:?} -> {to:?} [label=\"{}",
                events_joined(&arrow.events, "\\n")
            );
            assert!(dot.contains(&dot_line), "{dot_line} not in\n{dot}");
        }
        let rows: usize = arrows.iter().map(|arrow| arrow.events.len()).sum();
        assert_eq!(rows, TRANSITIONS.len());
    }

    #[test]
    fn each_state_shows_the_interest_the_loop_registers() {
        assert_eq!(registration(StateKind::Receiving), "registered READABLE");
        assert_eq!(registration(StateKind::Sending), "registered WRITABLE");
        assert_eq!(registration(StateKind::Lingering), "registered READABLE");
        assert_eq!(registration(StateKind::Closed), "deregistered, slot freed");
        assert!(mermaid().contains("Sending: registered WRITABLE"));
    }

    #[test]
    fn only_the_closes_out_of_sending_before_the_last_byte_are_drawn_as_resets() {
        let reset_arrows: Vec<(StateKind, Vec<Event>)> = arrows()
            .into_iter()
            .filter(|arrow| arrow.reset)
            .map(|arrow| (arrow.from, arrow.events))
            .collect();
        assert_eq!(
            reset_arrows,
            vec![(
                StateKind::Sending,
                vec![Event::TimedOut, Event::Failed, Event::Abandoned]
            )]
        );
        assert!(mermaid().contains("Sending --> Closed: TimedOut, Failed, Abandoned (reset)"));
    }

    // -----------------------------------------------------------------------
    // The reset arrows against real connections
    // -----------------------------------------------------------------------

    /// A transport with a script: reads hand out `reads` then would block;
    /// writes take at most `write_room` bytes in all, then would block or,
    /// with `write_error`, fail.
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        write_room: usize,
        write_error: Option<ErrorKind>,
        shutdown_error: Option<ErrorKind>,
    }

    impl Script {
        fn new(message: &[u8]) -> Self {
            Script {
                reads: VecDeque::from([Ok(message.to_vec())]),
                write_room: usize::MAX,
                write_error: None,
                shutdown_error: None,
            }
        }
    }

    impl Transport for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(e)) => Err(e),
                None => Err(ErrorKind::WouldBlock.into()),
            }
        }

        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.write_room == 0 {
                return Err(self.write_error.unwrap_or(ErrorKind::WouldBlock).into());
            }
            let n = buf.len().min(self.write_room);
            self.write_room -= n;
            Ok(n)
        }

        fn shutdown_write(&mut self) -> io::Result<()> {
            match self.shutdown_error {
                Some(kind) => Err(kind.into()),
                None => Ok(()),
            }
        }
    }

    /// Drives a new connection through `script` (the message `abc`, burst
    /// framing), then `then`, and says how it closed: whether it closes
    /// with a reset.
    fn closes_with_reset(mut script: Script, then: impl FnOnce(&mut Connection, &Context)) -> bool {
        let config = Config {
            framing: Framing::Burst,
            idle_timeout: Some(Duration::from_secs(1)),
            linger: Duration::from_secs(1),
            ..Config::default()
        };
        let stats = Stats::default();
        let mut scratch = vec![0; scratch_len(&config)];
        let start = Instant::now();
        let name = Name {
            id: 1,
            peer: None,
            via: None,
        };
        let mut conn = Connection::new(name, start);
        let mut cx = Context {
            config: &config,
            stats: &stats,
            now: start,
            scratch: &mut scratch,
            observer: None,
            admission: None,
        };
        conn.on_ready(&mut script, &mut cx);
        let later = Context {
            config: &config,
            stats: &stats,
            now: start + Duration::from_secs(2),
            scratch: &mut [],
            observer: None,
            admission: None,
        };
        then(&mut conn, &later);
        assert!(conn.close_reason().is_some(), "not closed: {}", conn.state());
        conn.closes_with_reset()
    }

    fn stuck_sending() -> Script {
        Script {
            write_room: 1,
            ..Script::new(b"abc")
        }
    }

    #[test]
    fn the_arrows_drawn_as_resets_are_the_closes_that_reset() {
        let nothing = |_: &mut Connection, _: &Context| {};
        // Sending --TimedOut--> Closed, mid-reply: a reset.
        assert!(closes_with_reset(stuck_sending(), |conn, cx| {
            assert!(conn.on_deadline(cx));
        }));
        // Sending --Abandoned--> Closed, mid-reply: a reset.
        assert!(closes_with_reset(stuck_sending(), |conn, cx| conn.cut_off(cx)));
        // Sending --Failed--> Closed, a write failed: a reset.
        let failing_write = Script {
            write_error: Some(ErrorKind::ConnectionReset),
            ..stuck_sending()
        };
        assert!(closes_with_reset(failing_write, nothing));
        // Sending --Failed--> Closed after the whole reply (the shutdown
        // failed): orderly, the exception the reset arrow's doc names.
        let failing_shutdown = Script {
            shutdown_error: Some(ErrorKind::NotConnected),
            ..Script::new(b"abc")
        };
        assert!(!closes_with_reset(failing_shutdown, nothing));
        // Sending --ReplyWritten--> Closed (the client had finished): orderly.
        let mut finished = Script::new(b"abc");
        finished.reads.push_back(Ok(Vec::new()));
        assert!(!closes_with_reset(finished, nothing));
        // Receiving and Lingering closes: orderly.
        let silent = || Script {
            reads: VecDeque::new(),
            ..Script::new(b"")
        };
        assert!(!closes_with_reset(silent(), |conn, cx| {
            assert!(conn.on_deadline(cx));
        }));
        assert!(!closes_with_reset(silent(), |conn, cx| conn.cut_off(cx)));
        assert!(!closes_with_reset(Script::new(b"abc"), |conn, cx| {
            assert!(conn.on_deadline(cx));
        }));
        assert!(!closes_with_reset(Script::new(b"abc"), |conn, cx| conn.cut_off(cx)));
        // And the predicate agrees on each of those rows.
        assert!(may_cut_off_reply(StateKind::Sending, Event::TimedOut));
        assert!(may_cut_off_reply(StateKind::Sending, Event::Abandoned));
        assert!(may_cut_off_reply(StateKind::Sending, Event::Failed));
        assert!(!may_cut_off_reply(StateKind::Sending, Event::ReplyWritten));
        assert!(!may_cut_off_reply(StateKind::Receiving, Event::TimedOut));
        assert!(!may_cut_off_reply(StateKind::Lingering, Event::Abandoned));
    }
}
