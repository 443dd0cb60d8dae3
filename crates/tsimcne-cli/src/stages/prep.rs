//! `prep`: turn a dataset into the image table (Parquet) every later stage reads.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tsimcne_data::Duplicates;

use crate::flags::prep::Args;
use crate::{Bar, run_main};

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    run_main(|| {
        let cfg = args.config()?;
        let start = Instant::now();
        let s = tsimcne_data::prep(&cfg, &Bar::default())?;
        eprintln!(
            "wrote {}: {} images ({} train, {} test), {}x{}x{}, {} classes, in {:.2} s",
            cfg.out.display(),
            s.images,
            s.train,
            s.test,
            s.height,
            s.width,
            s.channels,
            s.classes,
            start.elapsed().as_secs_f64()
        );
        for w in &s.warnings {
            eprintln!("warning: {w}");
        }
        let files = |n: usize| if n == 1 { "file" } else { "files" };
        if let Some(list) = &s.skipped_list {
            let n = s.skipped.len();
            eprintln!(
                "skipped {n} unreadable {}, listed in {}",
                files(n),
                list.display()
            );
        }
        if let Some(list) = &s.duplicates_list {
            let kept = match cfg.folder.duplicates {
                Duplicates::Drop => "left out",
                Duplicates::Keep => "kept; --dedupe leaves them out",
            };
            let n = s.duplicates.len();
            let (dups, list) = (
                if n == 1 { "duplicate" } else { "duplicates" },
                list.display(),
            );
            eprintln!("found {n} exact {dups} of earlier files ({kept}), listed in {list}");
        }
        Ok(())
    })
}
