//! cargo fuzz run -s none connection
//!
//! Bytes become a script of read results and write capacities that drives one
//! connection from accept to close; see `revecho::internals::fuzz::connection`.
//! The body lives in the library so that `cargo test --test fuzz_corpus`
//! replays the committed corpus through the same code without libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    revecho::internals::fuzz::connection(data);
});
