//! The stages, each with its own command line, and the one executable that
//! runs them all: `tsimcne`, called under a stage's name (a link `prep` →
//! `tsimcne`, as `make build` installs them) or as `tsimcne STAGE …`.
//!
//! One executable instead of six: every stage links the same network,
//! tables and kernels, so six binaries were six copies of one program
//! (about 22 MB each) and six links of it at every build.

mod embed;
mod estimate;
mod evaluate;
mod explore;
mod prep;
mod pretrain;
mod two_d;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tsimcne_train::stage::{StageSummary, TwoDStage};

/// A stage of the pipeline: its command name, what it does, and its `main`.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub name: &'static str,
    pub about: &'static str,
    main: fn(Vec<OsString>) -> ExitCode,
}

impl Stage {
    /// Runs the stage; `argv` is its command line, the stage's name first.
    pub fn run(&self, argv: Vec<OsString>) -> ExitCode {
        (self.main)(argv)
    }
}

/// Every stage, in pipeline order.
pub const STAGES: [Stage; 8] = [
    Stage {
        name: "prep",
        about: "turn a dataset into the image table every later stage reads",
        main: prep::main,
    },
    Stage {
        name: "pretrain",
        about: "stage 1: contrastive pretraining with the 128-D output",
        main: pretrain::main,
    },
    Stage {
        name: "project",
        about: "stage 2: a fresh 2-D output layer, trained alone",
        main: |argv| two_d::main(TwoDStage::Project, argv),
    },
    Stage {
        name: "finetune",
        about: "stage 3: everything trained in 2-D",
        main: |argv| two_d::main(TwoDStage::Finetune, argv),
    },
    Stage {
        name: "embed",
        about: "place the images of any image table with a trained model",
        main: embed::main,
    },
    Stage {
        name: "evaluate",
        about: "kNN accuracy, neighbour preservation and a picture of a map",
        main: evaluate::main,
    },
    Stage {
        name: "explore",
        about: "an interactive map of the images in one offline HTML file",
        main: explore::main,
    },
    Stage {
        name: "estimate",
        about: "how long a run's training will take on this machine (timed, not guessed)",
        main: estimate::main,
    },
];

/// The stage called `name`.
pub fn stage(name: &str) -> Option<&'static Stage> {
    STAGES.iter().find(|s| s.name == name)
}

/// The executable's file name.
pub const EXE: &str = "tsimcne";

/// `main` of the `tsimcne` executable: the stage named by the file name it
/// was called under, else by its first argument.
pub fn main(mut argv: Vec<OsString>) -> ExitCode {
    let called = argv
        .first()
        .and_then(|a| Path::new(a).file_stem())
        .and_then(|s| s.to_str())
        .and_then(stage);
    if let Some(s) = called {
        return s.run(argv);
    }
    let first = argv.get(1).map(|a| a.to_string_lossy().into_owned());
    if let Some(s) = first.as_deref().and_then(stage) {
        argv.remove(0);
        return s.run(argv);
    }
    match first.as_deref() {
        Some("--link-stages") => {
            let dir = argv.get(2).map(PathBuf::from);
            crate::run_main(|| {
                let dir = dir.context("--link-stages needs a folder")?;
                crate::links::link_stages(&dir)?;
                eprintln!("linked {} stages in {}", STAGES.len(), dir.display());
                Ok(())
            })
        }
        Some("-V" | "--version") => {
            println!("{EXE} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        None | Some("-h" | "--help" | "help") => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: {other:?} is not a stage; `{EXE} --help` lists them");
            ExitCode::from(2)
        }
    }
}

/// `tsimcne --help`.
fn usage() -> String {
    let mut s = format!(
        "t-SimCNE: draw an image dataset as a 2-D map.\n\n\
         Usage: {EXE} STAGE [OPTIONS]   (or STAGE [OPTIONS], through a link named after it)\n\
         \x20      {EXE} --link-stages DIR   link each stage's name to this executable in DIR\n\n\
         Stages (`{EXE} STAGE --help` for each one's options):\n"
    );
    for st in &STAGES {
        s.push_str(&format!("  {:<10} {}\n", st.name, st.about));
    }
    s
}

/// `--print-key`'s output: the key on stdout.
fn print_key(key: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(key.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// A training stage's last line.
fn report_training(summary: &StageSummary, epochs: usize) {
    let last = summary.epochs.last().map_or(f64::NAN, |l| l.loss);
    eprintln!(
        "wrote {}: {epochs} epochs on {} images, final loss {last:.4}",
        summary.out.display(),
        summary.images
    );
}

#[cfg(test)]
mod tests {
    /// The stages stay thin: parse, call, report (their flags live in
    /// `crate::flags`).
    #[test]
    fn every_stage_body_is_at_most_60_lines() {
        let bodies = [
            ("embed.rs", include_str!("embed.rs")),
            ("estimate.rs", include_str!("estimate.rs")),
            ("evaluate.rs", include_str!("evaluate.rs")),
            ("explore.rs", include_str!("explore.rs")),
            ("prep.rs", include_str!("prep.rs")),
            ("pretrain.rs", include_str!("pretrain.rs")),
            ("two_d.rs", include_str!("two_d.rs")),
        ];
        for (file, src) in bodies {
            let lines = src.lines().count();
            assert!(lines <= 60, "src/stages/{file} has {lines} lines");
        }
        let listed = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/stages"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "mod.rs")
            .count();
        assert_eq!(
            listed,
            bodies.len(),
            "a stage file is missing from this test"
        );
    }
}
