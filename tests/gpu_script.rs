//! `bench/gpu.sh`, the whole GPU check, run on the CPU (`DEVICE=cpu`, the
//! tiny preset): its cases, its time budget and its summary table work
//! before a GPU session spends its few minutes on them. PyTorch's rows
//! fail where python3 has no torch; ours must have numbers.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{repo_root, s, stage};

/// The folder of the stages and `examples/bench_train` (built by
/// `cargo test`, as `make test` runs it).
fn bin_dir() -> PathBuf {
    let dir = stage("pretrain")
        .parent()
        .expect("the stages' folder")
        .to_path_buf();
    let bench = dir.join("examples/bench_train");
    assert!(
        bench.exists(),
        "{} is missing: `cargo test --profile release --workspace` (make test) builds it",
        bench.display()
    );
    dir
}

/// Runs bench/gpu.sh with `env` on the CPU into `work`; returns its stdout
/// and stderr.
fn gpu_sh(work: &Path, env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("bench/gpu.sh"))
        .env("BIN", bin_dir())
        .env("BENCH_DIR", work)
        .env("DEVICE", "cpu")
        .env("PRESET", "tiny")
        .env("BATCHES", "4")
        .env("IMAGES", "48")
        .env("THREADS", "1")
        .env("STEP_FORMS", "candle fast")
        .env("DEMO_STEP_FORMS", "fast")
        .env("COMPILE_BATCHES", "")
        .env("CAP", "60")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "bench/gpu.sh {env:?}: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// The markdown table's cells of the row for `what` and `form`.
fn row<'a>(table: &'a str, what: &str, form: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {what} | {form} |")))
        .unwrap_or_else(|| panic!("no row {what} / {form} in:\n{table}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

/// Whether python3 has numpy, which the epoch case's archive maker needs
/// (bench/make_cifar_like.py).
fn python_with_numpy() -> bool {
    common::python_imports("numpy", "gpu.sh's epoch case")
}

#[test]
fn the_gpu_check_measures_our_step_and_epoch_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = python_with_numpy();
    let cases = if epoch { "step epoch" } else { "step" };
    let (out, err) = gpu_sh(dir.path(), &[("CASES", cases), ("EPOCHS", "2")]);
    let mut rows = vec![
        ("step, batch 4", "ours-candle"),
        ("step, batch 4", "ours-fast"),
        ("demo step (small, 14x14x1), batch 256", "ours-fast"),
    ];
    if epoch {
        rows.extend([
            ("whole epoch, batch 4", "ours-fast"),
            ("whole epoch, batch 4", "ours-next"),
        ]);
    }
    for (what, form) in rows {
        let cells = row(&out, what, form);
        let secs: f64 = cells[2]
            .parse()
            .unwrap_or_else(|_| panic!("{what} / {form}: {cells:?}\n{err}"));
        assert!(secs > 0.0, "{what} / {form}: {cells:?}");
    }
    // COMPILE_BATCHES="" times torch.compile at no batch.
    assert!(!out.contains("torch-compile"), "{out}");
}

#[test]
fn the_gpu_check_keeps_to_its_budget_and_says_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // 25 s leave under 10 s once the summary's 20 s are set aside: every
    // command is skipped, and the run still ends with its table.
    let (out, err) = gpu_sh(
        dir.path(),
        &[
            ("CASES", "step demo"),
            ("BUDGET", "25"),
            ("DEMO_FORMS", "next"),
        ],
    );
    assert_eq!(
        row(&out, "step, batch 4", "ours-fast")[2],
        "skipped",
        "{out}"
    );
    assert!(err.contains("demo next: skipped, BUDGET spent"), "{err}");
    let work = dir.path().join("gpu");
    assert!(
        !work.join("runs-next").exists(),
        "the demo ran: {}",
        s(&work)
    );
}

#[test]
fn the_gpu_check_refuses_an_unknown_case() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo_root().join("bench/gpu.sh"))
        .env("BIN", bin_dir())
        .env("BENCH_DIR", dir.path())
        .env("CASES", "tests stpe")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown case 'stpe'"), "{err}");
}

/// The demo case runs `make demo` with a form's make variables (here a
/// 300-image demo of one epoch a stage at batch 64, seconds on the CPU):
/// its wall time, kNN and per-stage epochs are reported, and the
/// variables reach the stages.
#[test]
fn the_gpu_checks_demo_case_runs_a_form_with_make_variables() {
    let dir = tempfile::tempdir().unwrap();
    let form = "tested+DEMO_LIMIT=300+DEMO_PRETRAIN_EPOCHS=1+DEMO_PROJECT_EPOCHS=1\
                +DEMO_FINETUNE_EPOCHS=1+DEMO_BATCH=64";
    let (out, err) = gpu_sh(dir.path(), &[("CASES", "demo"), ("DEMO_FORMS", form)]);
    assert!(out.contains(&format!("demo {form}: ")), "{out}\n{err}");
    assert!(out.contains("kNN@15"), "{out}\n{err}");
    assert!(
        out.contains(&format!("demo {form} finetune: 1 epochs")),
        "{out}\n{err}"
    );
    let runs = dir
        .path()
        .join("gpu")
        .join(format!("runs-{}", form.replace(['+', '='], "_")));
    for stage in ["pretrain", "project", "finetune"] {
        let config = std::fs::read_to_string(runs.join("demo").join(stage).join("config.json"))
            .unwrap_or_else(|e| panic!("{stage}'s config in {}: {e}", s(&runs)));
        assert!(config.contains("\"batch_size\": 64"), "{stage}: {config}");
    }
}
