//! End-to-end tests of the `pretrain` binary on the tiny preset: outputs,
//! resume after kill -9 (byte-identical), refusal of changed settings, and
//! bad input.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tsimcne_format::model_config::ModelConfig;

const PREP: &str = "prep";
const PRETRAIN: &str = "pretrain";

/// A 200-image slice of the embedded Fashion-MNIST test set.
fn images(dir: &Path, n: usize) -> PathBuf {
    let out = dir.join("images.parquet");
    embedded_subset(&out, n);
    out
}

/// The tiny preset's arguments with this file's batch, warm-up and seed.
fn args<'a>(images: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    let flags = [("--batch-size", "32"), ("--warmup", "1"), ("--seed", "7")];
    with_flags(tiny_pretrain_args(images, out, epochs), &flags)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn trains_the_tiny_preset_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 200);
    let out = dir.path().join("pretrain");
    let r = run(PRETRAIN, &args(&imgs, &out, "2"));
    assert!(r.ok(), "{}", r.stderr);
    assert!(
        r.stderr.contains("epoch    2"),
        "per-epoch lines off a terminal: {}",
        r.stderr
    );
    let cfg = ModelConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(cfg.stage, "pretrain");
    assert_eq!(cfg.training.lr, 0.03 * 32.0 / 256.0);
    assert_eq!((cfg.input.height, cfg.input.channels), (28, 1));
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    // The model loads back under the reference names.
    let m = tsimcne_model::Model::load(
        &out.join("model.safetensors"),
        &cfg.arch,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(m.num_batches_tracked, 2 * (200 / 32));
    // features.parquet: every image, backbone 16-D and head 128-D.
    let f = std::fs::File::open(out.join("features.parquet")).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    assert_eq!(b.metadata().file_metadata().num_rows(), 200);
    let schema = b.schema().clone();
    assert!(
        schema
            .field_with_name("backbone")
            .unwrap()
            .data_type()
            .to_string()
            .contains("16")
    );
    assert!(
        schema
            .field_with_name("head")
            .unwrap()
            .data_type()
            .to_string()
            .contains("128")
    );
}

#[test]
fn resume_after_kill_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 160);
    let clean = dir.path().join("clean");
    let r = run(PRETRAIN, &args(&imgs, &clean, "4"));
    assert!(r.ok(), "{}", r.stderr);

    let killed = dir.path().join("killed");
    // Kill -9 at several moments: before the first checkpoint, and after one
    // or more; then the same command again, until it finishes.
    for wait_for_epochs in [0usize, 1, 2] {
        let mut child = Command::new(stage(PRETRAIN))
            .args(args(&imgs, &killed, "4"))
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        loop {
            let done = std::fs::read_to_string(killed.join("log.csv"))
                .map_or(0, |l| l.lines().count().saturating_sub(1));
            if done >= wait_for_epochs || t0.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150 * wait_for_epochs as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    let r = run(PRETRAIN, &args(&imgs, &killed, "4"));
    assert!(r.ok(), "{}", r.stderr);
    for f in [
        "model.safetensors",
        "features.parquet",
        "checkpoint.safetensors",
    ] {
        assert!(
            read(&clean.join(f)) == read(&killed.join(f)),
            "{f} differs after kill and resume"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    // A kill during a write may leave a temporary; it never has a final name.
    assert!(
        leftovers.iter().all(|n| n.starts_with('.')),
        "{leftovers:?}"
    );
}

#[test]
fn changed_settings_are_refused_unless_restart() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 100);
    let out = dir.path().join("p");
    assert!(run(PRETRAIN, &args(&imgs, &out, "1")).ok());
    let model = read(&out.join("model.safetensors"));
    let mut changed = args(&imgs, &out, "1");
    changed.extend(["--lr", "0.5"]);
    let r = run(PRETRAIN, &changed);
    r.assert_user_error("checkpoint.safetensors", &["other settings", "--restart"]);
    assert_eq!(
        read(&out.join("model.safetensors")),
        model,
        "a refused run keeps the earlier model"
    );
    changed.push("--restart");
    let r = run(PRETRAIN, &changed);
    assert!(r.ok(), "{}", r.stderr);
    assert_eq!(
        ModelConfig::load(&out.join("config.json"))
            .unwrap()
            .training
            .lr,
        0.5
    );
    // Threads are not a hyperparameter: a resume with other threads is accepted.
    let mut more = changed.clone();
    more.pop();
    let k = more.iter().position(|a| *a == "--threads").unwrap() + 1;
    more[k] = "1";
    assert!(run(PRETRAIN, &more).ok());
}

/// A second run on an output directory that a live run is writing is a
/// one-line error that leaves the first run alone (a `--restart` would
/// otherwise delete its checkpoint); once the first run dies, even by
/// kill -9, the directory is free again.
#[test]
fn a_second_run_on_a_busy_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 160);
    let out = dir.path().join("busy");
    let mut first = Command::new(stage(PRETRAIN))
        .args(args(&imgs, &out, "200"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !out.join("log.csv").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no epoch in 2 min");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = args(&imgs, &out, "200");
    second.push("--restart");
    let r = run(PRETRAIN, &second);
    r.assert_user_error(s(&out), &["another run is writing this directory"]);
    assert!(first.try_wait().unwrap().is_none(), "the first run goes on");
    let _ = first.kill();
    let _ = first.wait();
    let mut short = args(&imgs, &out, "2");
    short.push("--restart");
    let r = run(PRETRAIN, &short);
    assert!(r.ok(), "{}", r.stderr);
}

/// Augmentation settings other than the recipe's (and pixel-neighbour
/// positives) are recorded in config.json, and a checkpoint made with other
/// ones is refused; bad values are one-line errors before any work.
#[test]
fn augmentation_settings_are_recorded_and_refused_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 100);
    let out = dir.path().join("p");
    let mut a = args(&imgs, &out, "1");
    a.extend([
        "--crop-min",
        "0.5",
        "--jitter-p",
        "0",
        "--knn-positives",
        "5",
    ]);
    let r = run(PRETRAIN, &a);
    assert!(r.ok(), "{}", r.stderr);
    let aug = ModelConfig::load(&out.join("config.json"))
        .unwrap()
        .training
        .augment
        .expect("recorded");
    assert_eq!(
        (aug.crop_min, aug.jitter_p, aug.knn_positives),
        (0.5, 0.0, 5)
    );
    let mut changed = a.clone();
    let k = changed
        .iter()
        .position(|x| *x == "--knn-positives")
        .unwrap()
        + 1;
    changed[k] = "3";
    run(PRETRAIN, &changed)
        .assert_user_error("checkpoint.safetensors", &["other settings", "--restart"]);
    // The recipe's values are not recorded.
    let plain = dir.path().join("q");
    let mut b = args(&imgs, &plain, "1");
    b.extend([
        "--crop-min",
        "0.2",
        "--knn-positives",
        "0",
        "--weight-decay",
        "0.001",
    ]);
    assert!(run(PRETRAIN, &b).ok());
    let text = std::fs::read_to_string(plain.join("config.json")).unwrap();
    assert!(!text.contains("augment"), "{text}");
    assert!(text.contains("\"weight_decay\": 0.001"), "{text}");
    let bad_out = dir.path().join("bad");
    for (flag, value, words) in [
        ("--crop-min", "0", &["crop scale"][..]),
        ("--jitter-p", "2", &["jitter"][..]),
        (
            "--knn-positives",
            "100",
            &["--knn-positives", "100 images"][..],
        ),
        ("--knn-space", "both", &["need --knn-positives"][..]),
        ("--knn-refresh", "2", &["need --knn-positives"][..]),
        ("--weight-decay", "inf", &["weight decay", "inf"][..]),
        ("--checkpoint-every", "0", &["checkpoint interval (0)"][..]),
        ("--out-dim", "0", &["output dimension", "positive"][..]),
        ("--lr", "0", &["learning rate", "got 0"][..]),
    ] {
        let mut bad = args(&imgs, &bad_out, "1");
        bad.extend([flag, value]);
        let r = run(PRETRAIN, &bad);
        assert!(!r.ok());
        for w in words {
            assert!(r.stderr.contains(w), "{flag}: {}", r.stderr);
        }
    }
    run(PRETRAIN, &args(&imgs, &bad_out, "0"))
        .assert_user_error("", &["epochs (0)", "must be positive"]);
    // Feature neighbours of a random network mean nothing: pretraining
    // needs a refresh period for them.
    let mut bad = args(&imgs, &bad_out, "1");
    bad.extend(["--knn-positives", "5", "--knn-space", "features"]);
    run(PRETRAIN, &bad).assert_user_error("", &["--knn-refresh N > 0"]);
    let mut bad = args(&imgs, &bad_out, "1");
    bad.extend(["--knn-positives", "5", "--knn-space", "joint"]);
    run(PRETRAIN, &bad).assert_user_error("", &["--knn-refresh N > 0"]);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path(), 40);
    let out = dir.path().join("p");
    let missing = dir.path().join("nope.parquet");
    run(PRETRAIN, &args(&missing, &out, "1")).assert_user_error("nope.parquet", &["No such file"]);
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &read(&imgs)[..1000]).unwrap();
    run(PRETRAIN, &args(&corrupt, &out, "1")).assert_user_error("corrupt.parquet", &["parquet"]);
    let mut big = args(&imgs, &out, "1");
    let k = big.iter().position(|a| *a == "--batch-size").unwrap() + 1;
    big[k] = "64";
    run(PRETRAIN, &big).assert_user_error("64", &["batch size 64 is larger than the 40 images"]);
    // Images too small for the backbone.
    let small = dir.path().join("small");
    for i in 0..4u8 {
        save_grey(&small.join(format!("{i}.png")), 6, 6, |x, y| {
            (x + y) as u8 + i
        });
    }
    let small_table = dir.path().join("small.parquet");
    assert!(
        run(
            PREP,
            &["folder", "--input", s(&small), "--out", s(&small_table)]
        )
        .ok()
    );
    run(PRETRAIN, &args(&small_table, &out, "1"))
        .assert_user_error("small.parquet", &["6x6", "too small"]);
    // A learning rate that blows up: stopped with the epoch and step named.
    let mut wild = args(&imgs, &out, "3");
    let k = wild.iter().position(|a| *a == "--warmup").unwrap() + 1;
    wild[k] = "0";
    wild.extend(["--lr", "1e30", "--restart"]);
    let r = run(PRETRAIN, &wild);
    r.assert_user_error(
        "epoch",
        &["diverged", "is not finite", "last good checkpoint is kept"],
    );
    assert!(!out.join("model.safetensors").exists());
    assert!(out.join("checkpoint.safetensors").exists());
}

/// `estimate` times the steps on this machine and prints one line for
/// `make`; bad input is a one-line error.
#[test]
fn estimate_prints_the_run_timed_here() {
    let dir = tempfile::tempdir().unwrap();
    let images = images(dir.path(), 200);
    let r = run(
        "estimate",
        &[
            "--images",
            s(&images),
            "--backbone",
            "tiny",
            "--batch-size",
            "32",
            "--epochs",
            "3,0,2",
            "--threads",
            "2",
            "--label",
            "tiny",
            "--",
            "--crop-min",
            "1",
            "--jitter-p",
            "0",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let line = r.stdout.trim();
    assert!(
        line.starts_with("tiny: 3+0+2 epochs of 200 images, tiny, 2 threads: expect about "),
        "{line}"
    );
    // Nothing is trained in project: its share is zero.
    assert!(line.contains(" + 0 s + "), "{line}");
    assert!(line.contains("images/s, timed here in "), "{line}");
    let bad = run("estimate", &["--images", s(&images), "--epochs", "3,2"]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("--epochs takes three numbers"),
        "{}",
        bad.stderr
    );
    let missing = dir.path().join("nope.parquet");
    let bad = run("estimate", &["--images", s(&missing)]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("nope.parquet"), "{}", bad.stderr);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
}
