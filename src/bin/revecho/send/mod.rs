//! `revecho send`: the client half of the seed session, with an exit status
//! a script can trust.
//!
//! Layout: `exchange` does the socket calls, `verdict` judges the reply
//! against the message that was sent, `terminal` decides the manners owed
//! to a person at a terminal. This file reads the message, runs them in
//! order and turns the verdict into output and an exit status:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | the whole reply |
//! | 1 | nothing to judge: cannot connect, or a timeout before any reply byte (or standard input or output failed) |
//! | 2 | a usage error (clap) |
//! | 3 | a reply that is not whole: no reply, partial, reset, timeout, not a reversal |

mod exchange;
mod terminal;
mod verdict;

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use revecho::describe_error;

use crate::cli::SendArgs;
use exchange::{Deadline, Narrator};
use verdict::Context;

/// Runs the client: prints what came back raw on stdout, whatever the
/// verdict, and one `error: …` line on stderr unless the reply is whole.
pub fn run(args: SendArgs) -> ExitCode {
    if let Some(hint) = terminal::stdin_hint(args.message.is_some(), io::stdin().is_terminal()) {
        eprintln!("{hint}");
    }
    let message = match args.message {
        Some(message) => message.into_vec(),
        None => {
            let mut message = Vec::new();
            if let Err(e) = io::stdin().lock().read_to_end(&mut message) {
                return fail(format!("cannot read standard input: {}", describe_error(&e)));
            }
            message
        }
    };
    // The clock starts now, not before a person has finished typing.
    let deadline = Deadline::after(args.timeout);
    let stream = match exchange::connect(&args.connect, deadline) {
        Ok(stream) => stream,
        Err(message) => return fail(message),
    };
    let half_close = !args.keep_open;
    let outcome = exchange::talk(stream, &message, half_close, deadline, &Narrator(args.trace));
    let verdict = verdict::judge(&message, &outcome.reply, &outcome.ending);

    if let Err(e) = print_reply(&outcome.reply) {
        return fail(format!("cannot write the reply: {}", describe_error(&e)));
    }
    let context = Context {
        server: &args.connect,
        timeout: args.timeout,
        keep_open: args.keep_open,
    };
    if let Some(problem) = verdict.explain(&context) {
        eprintln!("error: {problem}");
    }
    ExitCode::from(verdict.exit_status())
}

/// The reply raw, plus a newline if a terminal needs one.
fn print_reply(reply: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(reply)?;
    if terminal::newline_after(reply, stdout.is_terminal()) {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `n` and `noun`, with the plural only where it belongs: "1 byte", "2 bytes".
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_byte_is_singular() {
        assert_eq!(count(1, "byte"), "1 byte");
        assert_eq!(count(0, "byte"), "0 bytes");
        assert_eq!(count(13, "reply byte"), "13 reply bytes");
    }
}
