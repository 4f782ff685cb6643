//! cargo test --test fuzz_corpus
//!
//! Replays every committed fuzz input through the fuzz targets' own bodies
//! (`revecho::internals::fuzz`), on the stable toolchain and without
//! libFuzzer: the seed corpus in `fuzz/corpus/<target>/` and the inputs that
//! once crashed a target in `fuzz/artifacts-regressions/<target>/`. A
//! crash that libFuzzer finds becomes a regression test by copying its
//! input into the latter; see docs/reliability.md.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use revecho::internals::fuzz;

/// The files of `fuzz/<folder>/<target>/`, sorted; none if it is missing.
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable corpus directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `body` on every committed input of `target`, and fails naming each
/// input that panicked (with `describe`'s account of it).
fn replay(target: &str, body: fn(&[u8]), describe: fn(&[u8]) -> String) {
    let corpus = inputs("corpus", target);
    assert!(
        corpus.len() >= 3,
        "the seed corpus of {target} is missing: {} inputs",
        corpus.len()
    );
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&inputs("artifacts-regressions", target)) {
        let data = fs::read(path).expect("a readable corpus file");
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| body(&data))) {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {reason}\n{}", path.display(), describe(&data)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn raw(data: &[u8]) -> String {
    format!("input: b\"{}\"", data.escape_ascii())
}

#[test]
fn the_connection_corpus_holds_every_invariant() {
    replay("connection", fuzz::connection, |data| {
        format!("{:#?}", fuzz::Script::from_bytes(data))
    });
}

#[test]
fn the_framing_corpus_scans_and_replies_as_specified() {
    replay("framing", fuzz::framing, raw);
}

#[test]
fn the_proxy_protocol_corpus_parses_consistently() {
    replay("proxy_protocol", fuzz::proxy_protocol, raw);
}
