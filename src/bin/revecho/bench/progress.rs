//! The live progress line on a terminal: elapsed time, rate and errors.
//!
//! Drawn on stderr, and only when stderr is a terminal, so a pipe gets the
//! result and nothing else. The loop redraws it itself a few times a second
//! (no ticker thread: the client stays single-threaded).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::tally::Tally;

/// How often the line is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The progress line, or nothing when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    next_redraw: Cell<Instant>,
}

impl Progress {
    /// A progress line on stderr if it is a terminal, else a silent one.
    pub fn on_stderr() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            next_redraw: Cell::new(Instant::now()),
        }
    }

    /// When the loop should wake up to redraw, if anything is drawn.
    pub fn next_update(&self) -> Option<Instant> {
        self.bar.as_ref().map(|_| self.next_redraw.get())
    }

    /// Redraws the load's line if it is due.
    pub fn update(&self, now: Instant, measure_start: Instant, tally: &Tally) {
        if self.bar.is_none() || now < self.next_redraw.get() {
            return;
        }
        if now < measure_start {
            let left = measure_start.duration_since(now).as_secs_f64();
            self.show(now, format!("warming up, {left:.1} s left"));
            return;
        }
        let elapsed = now.duration_since(measure_start).as_secs_f64();
        let rate = if elapsed > 0.0 {
            tally.completed as f64 / elapsed
        } else {
            0.0
        };
        self.show(
            now,
            format!(
                "{elapsed:.1} s: {} completed, {rate:.0} connections/s, {} errors",
                tally.completed,
                tally.error_total()
            ),
        );
    }

    /// Redraws with `message` if a redraw is due.
    pub fn say(&self, now: Instant, message: impl FnOnce() -> String) {
        if self.bar.is_some() && now >= self.next_redraw.get() {
            self.show(now, message());
        }
    }

    fn show(&self, now: Instant, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
            bar.tick();
        }
        self.next_redraw.set(now + REDRAW_EVERY);
    }

    /// Clears the line before the result is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
