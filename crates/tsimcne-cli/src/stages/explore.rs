//! `explore`: an interactive map of the images, in one offline HTML file.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::flags::explore::Args;
use crate::run_main;

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    run_main(|| {
        let page = tsimcne_explore::build(&args.config()?)?;
        let path = page.write(&args.out)?;
        let mib = page.bytes() as f64 / (1024.0 * 1024.0);
        let beside = match page.data_files() {
            0 => String::new(),
            n => format!(", the sheets in {n} files of {}", tsimcne_explore::DATA_DIR),
        };
        eprintln!(
            "wrote {} ({} images, {} thumbnail sheets{beside}, {mib:.1} MiB)",
            path.display(),
            page.points,
            page.sheets
        );
        Ok(())
    })
}
