//! `embed`: place the images of any image table with a trained model.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::flags::embed::Args;
use crate::{run_main, set_compute_threads};

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    set_compute_threads(args.threads());
    run_main(|| {
        let n = tsimcne_train::embed::embed(&args.model, &args.images, &args.out, args.device)?;
        eprintln!("wrote {}: {n} images", args.out.display());
        Ok(())
    })
}
