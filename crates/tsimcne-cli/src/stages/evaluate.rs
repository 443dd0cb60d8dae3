//! `evaluate`: kNN accuracy, neighbour preservation and a picture of a map.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use tsimcne_eval::stage::{self, Drawn};

use crate::flags::evaluate::Args;
use crate::run_main;

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    run_main(|| {
        let report = stage::run(&args.config()?)?;
        println!("{}", tsimcne_eval::summary(&report.evaluation.metrics));
        eprintln!("wrote {}", report.metrics_file.display());
        match report.picture {
            Drawn::Files { png, svg } => {
                eprintln!("wrote {} and {}", png.display(), svg.display())
            }
            Drawn::TooFewDimensions(d) => eprintln!("a {d}-D embedding is not drawn"),
            Drawn::NotAsked => {}
        }
        Ok(())
    })
}
