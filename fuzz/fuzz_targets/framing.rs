//! cargo fuzz run -s none framing
//!
//! The framing scan and the reply on arbitrary bytes and limits; see
//! `revecho::internals::fuzz::framing`.
//! The body lives in the library so that `cargo test --test fuzz_corpus`
//! replays the committed corpus through the same code without libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    revecho::internals::fuzz::framing(data);
});
