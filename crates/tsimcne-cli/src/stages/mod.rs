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

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tsimcne_train::stage::TwoDStage;

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
        main: |argv| crate::two_d::main(TwoDStage::Project, argv),
    },
    Stage {
        name: "finetune",
        about: "stage 3: everything trained in 2-D",
        main: |argv| crate::two_d::main(TwoDStage::Finetune, argv),
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
                link_stages(&dir)?;
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

/// Makes `dir/<stage>` for every stage a link to this executable, replacing
/// whatever was there (an older build's separate binaries) atomically. The
/// link is relative when `dir` holds a file named like this executable (the
/// build folder, or a package being assembled), absolute otherwise.
pub fn link_stages(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let name = exe
        .file_name()
        .context("this executable has no file name")?;
    let (target, source) = if dir.join(name).is_file() {
        (PathBuf::from(name), dir.join(name))
    } else {
        (exe.clone(), exe.clone())
    };
    for st in &STAGES {
        let path = dir.join(st.name);
        let tmp = dir.join(format!(".{}.link-{}", st.name, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        make_link(&target, &source, &tmp)
            .with_context(|| format!("{}: making a link to {}", tmp.display(), exe.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: replacing it", path.display()))?;
    }
    Ok(())
}

#[cfg(unix)]
fn make_link(target: &Path, _source: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Elsewhere a hard link (symbolic links need privileges on Windows).
#[cfg(not(unix))]
fn make_link(_target: &Path, source: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::hard_link(source, link)
}
