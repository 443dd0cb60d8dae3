//! `estimate`: how long a pipeline's training will take on this machine.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use tsimcne_train::estimate::estimate;

use crate::flags::estimate::Args;
use crate::{run_main, set_compute_threads};

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    set_compute_threads(args.threads());
    run_main(|| {
        let cfg = args.config()?;
        println!(
            "{}",
            estimate(&cfg)?.line(&args.label, &args.backbone, &cfg)
        );
        Ok(())
    })
}
