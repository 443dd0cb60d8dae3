//! Fuzz target: see `harness::image_table`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::image_table(data, harness::scratch());
});
