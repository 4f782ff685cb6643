// cargo run --release --example timeline -- docs/timeline.svg
//
// Draws a timeline of one thread serving four clients at once, from the
// events an `Observer` receives (no log text is parsed): one lane per
// connection, marking its reads, writes, partial writes, WouldBlock, state
// changes, WRITABLE registration and close, and a row underneath with every
// wakeup of `poll`. scripts/timeline.sh runs it to redraw docs/timeline.svg.
//
// It embeds its own server (no server flags needed) and runs the clients of
// the scenario on their own threads, in this order:
// 1. a slow reader: a small SO_RCVBUF, 8 MiB sent, then the reply read back
//    a few KiB at a time with pauses, so the server's writes fill the send
//    buffer, come out partial and meet WouldBlock;
// 2. an oversize client: more than `--max-message`, refused, then lingered
//    on until it closes;
// 3. a trickling client: "Hello, world!" one byte every 25 ms;
// 4. a fast client, a little later: the seed's exchange, in well under a
//    millisecond.
//
// The picture depends on timing and on how the kernel sizes its buffers,
// so each run draws a slightly different one; the structure stays.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use revecho::observer::{Event, Observer, Operation, StateKind, WokeBy};
use revecho::{Config, Framing, Server};
use socket2::{Domain, Protocol, Socket, Type};

/// The slow reader's message (and reply): more than the kernel buffers for
/// one connection on loopback.
const SLOW_MESSAGE: usize = 8 * 1024 * 1024;
/// The server's limit; the oversize client sends one MiB more.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// What each lane is, in the order the clients connect (ids 1 to 4).
const ROLES: [&str; 4] = ["slow reader", "oversize", "trickling", "fast"];

fn main() -> io::Result<()> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/timeline.svg".into());
    let recorded = run_scenario()?;
    let lanes: Vec<(u64, &str)> = (1..).zip(ROLES).collect();
    std::fs::write(&target, draw(&recorded, &lanes))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {target}: {e}")))?;
    println!("{} events drawn to {target}", recorded.len());
    Ok(())
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

/// Every event with the time it arrived, from the server's own thread.
type Recorded = Vec<(Duration, Event)>;

/// An observer that keeps every event with its time since `start`.
struct Recorder {
    start: Instant,
    events: Arc<Mutex<Recorded>>,
}

impl Observer for Recorder {
    fn on_event(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push((self.start.elapsed(), event.clone()));
        }
    }
}

/// Serves the four clients, stops, and returns what the observer saw.
fn run_scenario() -> io::Result<Recorded> {
    let mut server = Server::bind(Config {
        listen: vec!["127.0.0.1:0".into()],
        framing: Framing::Eof,
        max_message: MAX_MESSAGE,
        linger: Duration::from_secs(2),
        ..Config::default()
    })?;
    let events = Arc::new(Mutex::new(Vec::new()));
    server.set_observer(Recorder {
        start: Instant::now(),
        events: Arc::clone(&events),
    });
    let address = server.local_addrs()[0];
    let stop = server.stop_handle();
    let serving = thread::spawn(move || server.run());

    // Connected one after another, so the server accepts them in this
    // order and numbers them 1, 2, 3; the fast client comes later.
    let slow = slow_reader(address)?;
    let mut stream = TcpStream::connect(address)?;
    let oversize = thread::spawn(move || -> io::Result<()> {
        let message = vec![b'x'; MAX_MESSAGE + 1024 * 1024];
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)?;
        expect_reply(stream, b"")
    });
    thread::sleep(Duration::from_millis(10));
    let mut trickling = TcpStream::connect(address)?;
    let trickle = thread::spawn(move || -> io::Result<()> {
        for byte in b"Hello, world!" {
            trickling.write_all(&[*byte])?;
            thread::sleep(Duration::from_millis(25));
        }
        trickling.shutdown(Shutdown::Write)?;
        expect_reply(trickling, b"!dlrow ,olleH")
    });
    thread::sleep(Duration::from_millis(150));
    let mut fast = TcpStream::connect(address)?;
    fast.write_all(b"Hello, world!")?;
    fast.shutdown(Shutdown::Write)?;
    expect_reply(fast, b"!dlrow ,olleH")?;

    for client in [slow, oversize, trickle] {
        client
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))??;
    }
    stop.stop()?;
    serving
        .join()
        .map_err(|_| io::Error::other("the server thread panicked"))??;
    let recorded = events.lock().map_err(|_| io::Error::other("observer poisoned"))?;
    Ok(recorded.clone())
}

/// Connects with a small receive buffer, sends `SLOW_MESSAGE` bytes on a
/// thread, and reads the reply slowly.
fn slow_reader(address: SocketAddr) -> io::Result<thread::JoinHandle<io::Result<()>>> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(&address.into())?;
    let mut stream: TcpStream = socket.into();
    Ok(thread::spawn(move || {
        let message: Vec<u8> = (0..SLOW_MESSAGE).map(|i| (i % 251) as u8).collect();
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)?;
        thread::sleep(Duration::from_millis(100));
        let mut reply = Vec::with_capacity(SLOW_MESSAGE);
        let mut chunk = [0u8; 4096];
        for reads in 1.. {
            match stream.read(&mut chunk)? {
                0 => break,
                n => reply.extend_from_slice(&chunk[..n]),
            }
            if reads % 8 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        if reply.iter().eq(message.iter().rev()) {
            Ok(())
        } else {
            Err(io::Error::other(
                "slow reader: the reply is not the reversed message",
            ))
        }
    }))
}

/// Reads to end of stream and checks the reply.
fn expect_reply(mut stream: TcpStream, expected: &[u8]) -> io::Result<()> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    if reply == expected {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "expected {} reply bytes, got {}",
            expected.len(),
            reply.len()
        )))
    }
}

// ---------------------------------------------------------------------------
// The drawing: SVG text from a few templates
// ---------------------------------------------------------------------------

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const LANE: f64 = 56.0;
const POLL_ROW: f64 = 30.0;
/// Where each kind of mark sits within a lane, from the lane's top: reads
/// and their WouldBlock above, writes and theirs below.
const READS: f64 = 12.0;
const READ_BLOCKS: f64 = 22.0;
const WRITES: f64 = 33.0;
const WRITE_BLOCKS: f64 = 44.0;

/// The timeline of `recorded` as an SVG document: one lane per entry of
/// `lanes` (connection id, label), then a row of `poll` wakeups, a time
/// axis and a legend.
fn draw(recorded: &[(Duration, Event)], lanes: &[(u64, &str)]) -> String {
    let end = recorded.last().map_or(1.0, |(at, _)| at.as_secs_f64()).max(1e-3);
    let x = |at: &Duration| LEFT + at.as_secs_f64() / end * (WIDTH - LEFT - RIGHT);
    let lane_y = |connection: u64| {
        lanes
            .iter()
            .position(|(id, _)| *id == connection)
            .map(|index| TOP + index as f64 * LANE)
    };
    let poll_y = TOP + lanes.len() as f64 * LANE + 8.0;
    let height = poll_y + POLL_ROW + 110.0;
    let mut svg = format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">One thread, four connections: what the loop did, from its observer's events</text>
"##
    );
    // The lanes: a label, then the states as coloured bands.
    let mut states: Vec<(u64, Duration, StateKind)> = Vec::new();
    let mut interests: Vec<(u64, Duration, bool)> = Vec::new();
    for (index, (id, label)) in lanes.iter().enumerate() {
        let y = TOP + index as f64 * LANE;
        svg += &format!(
            "<g class=\"lane\"><text x=\"8\" y=\"{:.1}\">conn {id}</text><text x=\"8\" y=\"{:.1}\" fill=\"#555\">{}</text></g>\n",
            y + 20.0,
            y + 34.0,
            escape(label)
        );
    }
    for (at, event) in recorded {
        match event {
            Event::Interest {
                connection,
                from: None,
                ..
            } => {
                states.push((*connection, *at, StateKind::Receiving));
                interests.push((*connection, *at, false));
            }
            Event::Interest { connection, to, .. } => {
                interests.push((*connection, *at, to.is_some_and(|to| to.is_writable())));
            }
            Event::State { connection, to, .. } => states.push((*connection, *at, *to)),
            _ => {}
        }
    }
    for (index, (connection, since, state)) in states.iter().enumerate() {
        let (Some(y), Some(fill)) = (lane_y(*connection), state_colour(*state)) else {
            continue;
        };
        let until = states[index + 1..]
            .iter()
            .find(|(other, _, _)| other == connection)
            .map_or(end, |(_, at, _)| at.as_secs_f64());
        let left = x(since);
        let right = LEFT + until / end * (WIDTH - LEFT - RIGHT);
        svg += &format!(
            "<rect class=\"state\" x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{state:?}</title></rect>\n",
            y + 4.0,
            (right - left).max(1.0),
            LANE - 8.0
        );
    }
    // While registered WRITABLE: a stripe along the bottom of the lane.
    for (index, (connection, since, writable)) in interests.iter().enumerate() {
        let Some(y) = lane_y(*connection).filter(|_| *writable) else {
            continue;
        };
        let until = interests[index + 1..]
            .iter()
            .find(|(other, _, _)| other == connection)
            .map_or(end, |(_, at, _)| at.as_secs_f64());
        let left = x(since);
        let right = LEFT + until / end * (WIDTH - LEFT - RIGHT);
        svg += &format!(
            "<rect class=\"writable-interest\" x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"4\" fill=\"#e80\"/>\n",
            y + LANE - 8.0,
            (right - left).max(2.0)
        );
    }
    // The marks, one per event.
    for (at, event) in recorded {
        let at_x = x(at);
        let mark = match event {
            Event::Poll { woke_by, events, .. } => {
                let colour = match woke_by {
                    WokeBy::Events => "#444",
                    WokeBy::Timeout => "#a0a",
                    WokeBy::Waker => "#d00",
                    // A kind of wakeup this drawing does not know yet.
                    _ => "#888",
                };
                format!(
                    "<line class=\"poll\" x1=\"{at_x:.1}\" x2=\"{at_x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\"><title>{events} events</title></line>",
                    poll_y + 4.0,
                    poll_y + POLL_ROW - 4.0
                )
            }
            Event::Read { connection, bytes } => match lane_y(*connection) {
                Some(y) if *bytes == 0 => circle("end-of-stream", at_x, y + READS, "#06c", "white"),
                Some(y) => tick("read", at_x, y + READS - 5.0, y + READS + 5.0, "#06c"),
                None => continue,
            },
            Event::Wrote {
                connection,
                written,
                offered,
            } => match lane_y(*connection) {
                Some(y) if written < offered => triangle("partial-write", at_x, y + WRITES, "#e80"),
                Some(y) => tick("write", at_x, y + WRITES - 5.0, y + WRITES + 5.0, "#080"),
                None => continue,
            },
            Event::WouldBlock {
                connection,
                operation,
            } => match (lane_y(*connection), operation) {
                (Some(y), Operation::Read) => cross("would-block", at_x, y + READ_BLOCKS),
                (Some(y), _) => cross("would-block", at_x, y + WRITE_BLOCKS),
                (None, _) => continue,
            },
            Event::State { connection, to, .. } => match lane_y(*connection) {
                Some(y) => format!(
                    "<line class=\"state-change\" x1=\"{at_x:.1}\" x2=\"{at_x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"><title>{to:?}</title></line>",
                    y + 2.0,
                    y + LANE - 2.0
                ),
                None => continue,
            },
            Event::Closed {
                connection,
                reason,
                abortive,
            } => match lane_y(*connection) {
                Some(y) => {
                    // The label after the mark, or before it near the right edge.
                    let (label_x, anchor) = if at_x < WIDTH - 160.0 {
                        (at_x + 6.0, "start")
                    } else {
                        (at_x - 6.0, "end")
                    };
                    format!(
                        "<g class=\"close\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"4\" height=\"{:.1}\" fill=\"black\"/><text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">closed: {}{}</text></g>",
                        at_x - 2.0,
                        y + 4.0,
                        LANE - 8.0,
                        y + LANE / 2.0 + 4.0,
                        escape(&reason.to_string()),
                        if *abortive { ", reset" } else { "" }
                    )
                }
                None => continue,
            },
            _ => continue,
        };
        svg += &mark;
        svg.push('\n');
    }
    let wakeups = recorded
        .iter()
        .filter(|(_, event)| matches!(event, Event::Poll { .. }))
        .count();
    svg += &format!(
        "<text x=\"8\" y=\"{:.1}\">poll wakeups</text><text x=\"8\" y=\"{:.1}\" fill=\"#555\">{wakeups} in all</text>\n",
        poll_y + POLL_ROW / 2.0 - 2.0,
        poll_y + POLL_ROW / 2.0 + 12.0
    );
    svg += &axis(end, poll_y + POLL_ROW + 6.0);
    svg += &legend(poll_y + POLL_ROW + 50.0);
    svg += "</svg>\n";
    svg
}

fn state_colour(state: StateKind) -> Option<&'static str> {
    match state {
        // The timeline never runs with --proxy-protocol: drawn as receiving.
        StateKind::ReadingProxyHeader | StateKind::Receiving => Some("#dceefc"),
        StateKind::Sending => Some("#fde9cf"),
        StateKind::Lingering => Some("#e6e6e6"),
        StateKind::Closed => None,
    }
}

fn tick(class: &str, x: f64, top: f64, bottom: f64, colour: &str) -> String {
    format!(
        "<line class=\"{class}\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"{colour}\"/>"
    )
}

fn circle(class: &str, x: f64, y: f64, stroke: &str, fill: &str) -> String {
    format!(
        "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" stroke=\"{stroke}\" fill=\"{fill}\"/>"
    )
}

fn triangle(class: &str, x: f64, y: f64, colour: &str) -> String {
    format!(
        "<path class=\"{class}\" d=\"M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\" fill=\"{colour}\"/>",
        x,
        y - 5.0,
        x - 4.0,
        y + 3.0,
        x + 4.0,
        y + 3.0
    )
}

fn cross(class: &str, x: f64, y: f64) -> String {
    format!(
        "<path class=\"{class}\" d=\"M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}\" stroke=\"#c00\" stroke-width=\"1.5\"/>",
        x - 3.0,
        y - 3.0,
        x + 3.0,
        y + 3.0,
        x - 3.0,
        y + 3.0,
        x + 3.0,
        y - 3.0
    )
}

/// A time axis under the lanes, with a tick every round number of
/// milliseconds.
fn axis(end: f64, y: f64) -> String {
    let span = WIDTH - LEFT - RIGHT;
    let step = [
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ]
    .into_iter()
    .find(|step| end / step <= 10.0)
    .unwrap_or(10.0);
    let mut out = format!(
        "<g class=\"axis\"><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"black\"/>",
        LEFT + span
    );
    let mut at = 0.0;
    while at <= end + 1e-9 {
        let x = LEFT + at / end * span;
        out += &format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y:.1}\" y2=\"{:.1}\" stroke=\"black\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} ms</text>",
            y + 4.0,
            y + 16.0,
            (at * 1000.0).round()
        );
        at += step;
    }
    out + "</g>\n"
}

/// What each mark means.
fn legend(y: f64) -> String {
    let items = [
        tick("legend", 0.0, -6.0, 6.0, "#06c") + "<text x=\"8\" y=\"4\">read</text>",
        circle("legend", 0.0, 0.0, "#06c", "white") + "<text x=\"8\" y=\"4\">read: end of stream</text>",
        tick("legend", 0.0, -6.0, 6.0, "#080") + "<text x=\"8\" y=\"4\">write</text>",
        triangle("legend", 0.0, 1.0, "#e80") + "<text x=\"8\" y=\"4\">partial write</text>",
        cross("legend", 0.0, 0.0) + "<text x=\"8\" y=\"4\">WouldBlock (read above, write below)</text>",
        "<rect x=\"-6\" y=\"-2\" width=\"12\" height=\"4\" fill=\"#e80\"/><text x=\"8\" y=\"4\">registered WRITABLE</text>".to_string(),
    ];
    let states = [
        (StateKind::Receiving, "Receiving"),
        (StateKind::Sending, "Sending"),
        (StateKind::Lingering, "Lingering"),
    ];
    let mut out = String::from("<g class=\"legend\">");
    for (index, item) in items.iter().enumerate() {
        let (column, row) = (index % 3, index / 3);
        out += &format!(
            "<g transform=\"translate({:.1},{:.1})\">{item}</g>",
            LEFT + column as f64 * 230.0,
            y + row as f64 * 18.0
        );
    }
    for (index, (state, name)) in states.iter().enumerate() {
        out += &format!(
            "<g transform=\"translate({:.1},{:.1})\"><rect x=\"-4\" y=\"-6\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"10\" y=\"4\">{name}</text></g>",
            LEFT + 690.0,
            y + index as f64 * 14.0 - 4.0,
            state_colour(*state).unwrap_or("white")
        );
    }
    out += &format!(
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#555\">Thin black line: a change of state (the band's colour is the state). Thick black bar: the close.</text><text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#555\">Poll row: grey, woken by events; purple, by the timeout; red, by the stop handle.</text>",
        y + 44.0,
        y + 58.0
    );
    out + "</g>\n"
}

/// Text safe inside an SVG element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use revecho::observer::CloseReason;

    fn at(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn poll(events: usize, woke_by: WokeBy) -> Event {
        Event::Poll {
            events,
            slept: at(1),
            woke_by,
        }
    }

    /// A recorded exchange: connection 1 replies in two writes, one
    /// partial, with WouldBlock between; connection 2 is refused.
    fn recorded() -> Recorded {
        use revecho::observer::Event::*;
        let writable = Some(mio::Interest::WRITABLE);
        let readable = Some(mio::Interest::READABLE);
        vec![
            (at(0), poll(1, WokeBy::Events)),
            (
                at(1),
                Interest {
                    connection: 1,
                    from: None,
                    to: readable,
                },
            ),
            (
                at(1),
                Interest {
                    connection: 2,
                    from: None,
                    to: readable,
                },
            ),
            (at(2), poll(2, WokeBy::Events)),
            (
                at(2),
                Read {
                    connection: 1,
                    bytes: 13,
                },
            ),
            (
                at(2),
                Read {
                    connection: 1,
                    bytes: 0,
                },
            ),
            (
                at(2),
                State {
                    connection: 1,
                    from: StateKind::Receiving,
                    to: StateKind::Sending,
                },
            ),
            (
                at(2),
                Wrote {
                    connection: 1,
                    written: 5,
                    offered: 13,
                },
            ),
            (
                at(2),
                WouldBlock {
                    connection: 1,
                    operation: Operation::Write,
                },
            ),
            (
                at(2),
                Interest {
                    connection: 1,
                    from: readable,
                    to: writable,
                },
            ),
            (
                at(3),
                Read {
                    connection: 2,
                    bytes: 1025,
                },
            ),
            (
                at(3),
                State {
                    connection: 2,
                    from: StateKind::Receiving,
                    to: StateKind::Lingering,
                },
            ),
            (
                at(3),
                WouldBlock {
                    connection: 2,
                    operation: Operation::Read,
                },
            ),
            (at(5), poll(1, WokeBy::Events)),
            (
                at(5),
                Wrote {
                    connection: 1,
                    written: 8,
                    offered: 8,
                },
            ),
            (
                at(5),
                State {
                    connection: 1,
                    from: StateKind::Sending,
                    to: StateKind::Closed,
                },
            ),
            (
                at(5),
                Interest {
                    connection: 1,
                    from: writable,
                    to: None,
                },
            ),
            (
                at(5),
                Closed {
                    connection: 1,
                    reason: CloseReason::Completed,
                    abortive: false,
                },
            ),
            (at(8), poll(0, WokeBy::Timeout)),
            (
                at(8),
                State {
                    connection: 2,
                    from: StateKind::Lingering,
                    to: StateKind::Closed,
                },
            ),
            (
                at(8),
                Closed {
                    connection: 2,
                    reason: CloseReason::Oversize,
                    abortive: false,
                },
            ),
            (at(9), poll(1, WokeBy::Waker)),
        ]
    }

    fn count(svg: &str, class: &str) -> usize {
        svg.matches(&format!("class=\"{class}\"")).count()
    }

    #[test]
    fn the_drawing_is_well_formed_svg() {
        let svg = draw(&recorded(), &[(1, "fast <&> first"), (2, "oversize")]);
        assert!(svg.starts_with("<?xml"), "{svg}");
        check_well_formed(&svg);
        assert!(svg.contains("fast &lt;&amp;&gt; first"), "labels are escaped");
    }

    #[test]
    fn the_drawing_has_a_lane_per_connection_and_a_mark_per_event() {
        let svg = draw(&recorded(), &[(1, "fast"), (2, "oversize")]);
        assert_eq!(count(&svg, "lane"), 2);
        assert_eq!(count(&svg, "poll"), 5, "every wakeup");
        assert_eq!(count(&svg, "read"), 2);
        assert_eq!(count(&svg, "end-of-stream"), 1);
        assert_eq!(count(&svg, "write"), 1);
        assert_eq!(count(&svg, "partial-write"), 1);
        assert_eq!(count(&svg, "would-block"), 2);
        assert_eq!(count(&svg, "state-change"), 4);
        assert_eq!(count(&svg, "writable-interest"), 1);
        assert_eq!(count(&svg, "close"), 2);
        // A band per state a connection was in: Receiving, Sending for the
        // first; Receiving, Lingering for the second.
        assert_eq!(count(&svg, "state"), 4);
        assert!(svg.contains("closed: oversize"));
    }

    #[test]
    fn events_of_connections_without_a_lane_are_left_out() {
        let svg = draw(&recorded(), &[(2, "oversize")]);
        assert_eq!(count(&svg, "lane"), 1);
        assert_eq!(count(&svg, "partial-write"), 0, "connection 1 has no lane");
        assert_eq!(count(&svg, "close"), 1);
        assert_eq!(count(&svg, "poll"), 5, "wakeups belong to no lane");
    }

    /// A small well-formedness check, enough for what `draw` emits: every
    /// element closes in order, attribute values are quoted, and text holds
    /// no bare `<` or `&`.
    fn check_well_formed(svg: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            let end = rest[start..].find('>').expect("a tag ends") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') {
                assert!(tag.ends_with('?'), "processing instruction: {tag}");
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name.trim()), "closing tag </{name}>");
                continue;
            }
            let name = tag.split_whitespace().next().expect("a tag name");
            let attributes = tag[name.len()..].trim_end_matches('/');
            assert_eq!(attributes.matches('"').count() % 2, 0, "quotes in <{tag}>");
            for pair in attributes.split('"').step_by(2) {
                let pair = pair.trim();
                assert!(
                    pair.is_empty() || pair.ends_with('='),
                    "unquoted value in <{tag}>"
                );
            }
            if !tag.ends_with('/') {
                open.push(name);
            }
        }
        check_text(rest);
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    fn check_text(text: &str) {
        for (index, _) in text.match_indices('&') {
            let entity = &text[index..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|known| entity.starts_with(known)),
                "bare & in {text:?}"
            );
        }
    }

    /// The whole scenario against a real server: every client finishes,
    /// and each of the four connections is registered, changes state and
    /// closes, with the reason its role predicts.
    #[test]
    fn the_scenario_runs_and_every_connection_closes() {
        let recorded = run_scenario().expect("the scenario");
        let closes: Vec<(u64, CloseReason)> = recorded
            .iter()
            .filter_map(|(_, event)| match event {
                Event::Closed {
                    connection, reason, ..
                } => Some((*connection, *reason)),
                _ => None,
            })
            .collect();
        let mut sorted = closes.clone();
        sorted.sort_by_key(|(connection, _)| *connection);
        assert_eq!(
            sorted,
            [
                (1, CloseReason::Completed),
                (2, CloseReason::Oversize),
                (3, CloseReason::Completed),
                (4, CloseReason::Completed)
            ]
        );
        let svg = draw(&recorded, &(1..).zip(ROLES).collect::<Vec<_>>());
        check_well_formed(&svg);
        assert_eq!(count(&svg, "lane"), 4);
        assert_eq!(count(&svg, "close"), 4);
    }
}
