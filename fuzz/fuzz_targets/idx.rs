//! Fuzz target: see `harness::idx`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::idx(data, harness::scratch());
});
