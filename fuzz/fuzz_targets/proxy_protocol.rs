//! cargo fuzz run -s none proxy_protocol
//!
//! The PROXY protocol header parser on arbitrary bytes; see
//! `revecho::internals::fuzz::proxy_protocol`.
//! The body lives in the library so that `cargo test --test fuzz_corpus`
//! replays the committed corpus through the same code without libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    revecho::internals::fuzz::proxy_protocol(data);
});
