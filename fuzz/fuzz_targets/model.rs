//! Fuzz target: see `harness::model`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::model(data, harness::scratch());
});
