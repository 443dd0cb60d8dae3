//! Today's results, pinned: `make tiny` and a shortened `make demo` (2,000
//! images, 2 + 1 + 2 epochs; every stage and every option of the demo's
//! preset) with a fixed seed and 2 threads, their models, tables and
//! metrics compared by SHA-256 with the sums in `tests/golden/runs.sha256`.
//! Any change of a result fails here; a change made on purpose updates the
//! sums in the same commit (`TSIMCNE_UPDATE_GOLDEN=1 cargo test --release
//! -p tsimcne-cli --test e2e golden_runs`) and says why.
//!
//! The CPU's results are bit-identical for the same seed and threads on the
//! same kind of machine; another instruction set or cache size may order a
//! float sum differently. The sums are kept per machine kind (instruction
//! set and cache sizes, the inputs of the matrix kernels' blocking); on a
//! kind with no sums the test checks that two runs give the same bits, and
//! says on stderr that the pinned sums were not compared.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

const SUMS: &str = "tests/golden/runs.sha256";

/// The files compared, relative to the runs folder.
const FILES: [&str; 16] = [
    "tiny/default/images.parquet",
    "tiny/default/pretrain/model.safetensors",
    "tiny/default/pretrain/features.parquet",
    "tiny/default/project/model.safetensors",
    "tiny/default/project/embedding.parquet",
    "tiny/default/finetune/model.safetensors",
    "tiny/default/finetune/embedding.parquet",
    "tiny/default/evaluate/metrics.json",
    "demo/images.parquet",
    "demo/pretrain/model.safetensors",
    "demo/pretrain/features.parquet",
    "demo/project/model.safetensors",
    "demo/project/embedding.parquet",
    "demo/finetune/model.safetensors",
    "demo/finetune/embedding.parquet",
    "demo/evaluate/metrics.json",
];

/// What decides the bits: the instruction set the kernels dispatch to, and
/// the cache sizes the matrix kernels block for.
fn machine_kind() -> String {
    let mut kind = std::env::consts::ARCH.to_owned();
    #[cfg(target_arch = "x86_64")]
    {
        let isa = if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "sse2"
        };
        kind.push(' ');
        kind.push_str(isa);
    }
    for i in 0..4 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read =
            |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).map(|s| s.trim().to_owned());
        if let (Ok(level), Ok(ty), Ok(size)) = (read("level"), read("type"), read("size"))
            && ty != "Instruction"
        {
            kind.push_str(&format!(" L{level}={size}"));
        }
    }
    kind
}

/// Runs `make TARGET VARS…` into `runs` with the test's stage links.
fn make(runs: &Path, args: &[&str]) {
    let bin = common::stage("prep");
    let bin = bin.parent().expect("the stages' folder");
    let out = Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(common::repo_root())
        .args(args)
        .arg(format!("RUNS={}", runs.display()))
        .arg(format!("BIN={}", bin.display()))
        .args(["NO_BUILD=1", "THREADS=2", "DEVICE=cpu"])
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("make runs (is it installed?)");
    assert!(
        out.status.success(),
        "make {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SHA-256 of each file; `metrics.json` without the fields that name
/// the run folder or time the run.
fn sums(runs: &Path) -> BTreeMap<&'static str, String> {
    FILES
        .iter()
        .map(|&f| {
            let path = runs.join(f);
            let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
            if f.ends_with("metrics.json") {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let o = v.as_object_mut().expect("metrics.json is an object");
                o.remove("embedding");
                o.remove("seconds");
                bytes = serde_json::to_vec_pretty(&v).unwrap();
            }
            let hex: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (f, hex)
        })
        .collect()
}

fn run_all() -> BTreeMap<&'static str, String> {
    let dir = tempfile::tempdir().unwrap();
    // The embedded test set, not Debian's full set where it is installed.
    make(
        dir.path(),
        &["tiny", "DATA=data/fashion-mnist", "RUN=default"],
    );
    make(
        dir.path(),
        &[
            "demo",
            "DEMO_LIMIT=2000",
            "DEMO_PRETRAIN_EPOCHS=2",
            "DEMO_PROJECT_EPOCHS=1",
            "DEMO_FINETUNE_EPOCHS=2",
        ],
    );
    sums(dir.path())
}

/// The pinned sums per machine kind: `## KIND` lines, each followed by
/// `SUM  FILE` lines.
fn parse(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut kind = None;
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("## ") {
            kind = Some(k.to_owned());
            all.entry(k.to_owned()).or_default();
        } else if let (Some(k), Some((sum, file))) = (&kind, line.split_once("  ")) {
            all.get_mut(k)
                .unwrap()
                .insert(file.to_owned(), sum.to_owned());
        }
    }
    all
}

fn render(all: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut s = String::from(
        "# SHA-256 of make tiny's and a short make demo's results, per machine kind\n\
         # (tests/golden_runs.rs; TSIMCNE_UPDATE_GOLDEN=1 rewrites this machine's block).\n",
    );
    for (kind, sums) in all {
        s.push_str(&format!("## {kind}\n"));
        for (file, sum) in sums {
            s.push_str(&format!("{sum}  {file}\n"));
        }
    }
    s
}

#[test]
fn make_tiny_and_a_short_demo_give_the_pinned_results() {
    let path = common::repo_root().join(SUMS);
    let kind = machine_kind();
    let got = run_all();
    let mut all = parse(&std::fs::read_to_string(&path).unwrap_or_default());
    if std::env::var_os("TSIMCNE_UPDATE_GOLDEN").is_some() {
        all.insert(
            kind.clone(),
            got.iter()
                .map(|(f, s)| ((*f).to_owned(), s.clone()))
                .collect(),
        );
        std::fs::write(&path, render(&all)).unwrap();
        eprintln!("golden_runs: wrote the sums of {kind:?} to {SUMS}");
        return;
    }
    match all.get(&kind) {
        Some(want) => {
            let diff: Vec<String> = FILES
                .iter()
                .filter(|f| want.get(**f) != got.get(**f))
                .map(|f| format!("{f}: pinned {:?}, got {}", want.get(*f), got[f]))
                .collect();
            assert!(
                diff.is_empty(),
                "results changed on {kind:?} (a change made on purpose: rerun with \
                 TSIMCNE_UPDATE_GOLDEN=1 and say why in the commit):\n{}",
                diff.join("\n")
            );
        }
        None => {
            let again = run_all();
            assert_eq!(
                got, again,
                "two runs on {kind:?} differ: results are not deterministic"
            );
            eprintln!(
                "golden_runs: {SUMS} has no sums for {kind:?}: checked that two runs give the \
                 same bits, not the pinned results (pin them with TSIMCNE_UPDATE_GOLDEN=1)"
            );
        }
    }
}
