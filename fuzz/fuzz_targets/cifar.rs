//! Fuzz target: see `harness::cifar`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::cifar(data, harness::scratch());
});
