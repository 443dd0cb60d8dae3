//! Replays the fuzz targets (`fuzz/harness.rs`, included here) on their
//! committed seeds, which must parse, and on every input the fuzzers ever
//! crashed on (`tests/corpus/fuzz/<target>/`), which must now give a clean
//! one-line error naming the file, or parse.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    crate::common::repo_root()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn fuzz_seeds_parse() {
    let scratch = tempfile::tempdir().unwrap();
    for (name, target) in harness::TARGETS {
        let seeds = files(&root().join("fuzz/seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            if let Err(e) = target(&data, &scratch.path().join(name)) {
                panic!("{}: {e}", seed.display());
            }
        }
    }
}

#[test]
fn fuzz_crash_inputs_give_clean_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let mut replayed = 0;
    for (name, target) in harness::TARGETS {
        for input in files(&root().join("tests/corpus/fuzz").join(name)) {
            let dir = scratch.path().join(name);
            let data = std::fs::read(&input).unwrap();
            if let Err(e) = target(&data, &dir) {
                assert!(!e.contains('\n'), "{}: {e:?}", input.display());
                assert!(
                    e.contains(dir.to_str().unwrap()),
                    "{}: {e} names no file",
                    input.display()
                );
            }
            replayed += 1;
        }
    }
    eprintln!("{replayed} crash inputs replayed");
}
