//! The end-to-end tests of the stages, one module per feature, in one test
//! binary: each test binary links the whole program, and one link instead
//! of fourteen takes minutes off a fresh `make test` on two cores
//! (bench/build-timings.md). Run one feature's tests with
//! `cargo test --release -p tsimcne-cli --test e2e prep::`.

mod common;

#[path = "corpus.rs"]
mod corpus;
#[path = "cut.rs"]
mod cut;
#[path = "device.rs"]
mod device;
#[path = "docs.rs"]
mod docs;
#[path = "evaluate.rs"]
mod evaluate;
#[path = "explore.rs"]
mod explore;
#[path = "fuzz_regressions.rs"]
mod fuzz_regressions;
#[path = "golden_runs.rs"]
mod golden_runs;
#[path = "gpu_script.rs"]
mod gpu_script;
#[path = "kill.rs"]
mod kill;
#[path = "prep.rs"]
mod prep;
#[path = "pretrain.rs"]
mod pretrain;
#[path = "resources.rs"]
mod resources;
#[path = "two_d.rs"]
mod two_d;
