//! End-to-end tests of `project`, `finetune` and `embed` on the tiny preset.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::*;

const PREP: &str = "prep";
const PRETRAIN: &str = "pretrain";
const PROJECT: &str = "project";
const FINETUNE: &str = "finetune";
const EMBED: &str = "embed";

const TRAIN: [&str; 8] = [
    "--batch-size",
    "32",
    "--threads",
    "2",
    "--seed",
    "3",
    "--epochs",
    "1",
];

fn ok_owned(bin: &str, args: &[String]) {
    ok(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// prep (96 images) and pretrain (tiny, 1 epoch) in `dir`.
fn pretrained(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("images.parquet");
    embedded_subset(&images, 96);
    let pre = dir.join("pretrain");
    let mut a = vec![
        "--images",
        s(&images),
        "--out",
        s(&pre),
        "--backbone",
        "tiny",
        "--warmup",
        "0",
    ];
    a.extend(TRAIN);
    ok(PRETRAIN, &a);
    (images, pre)
}

fn state(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    safetensors::tensor::View::data(&t)
        .iter()
        .for_each(|b| out.push(*b));
    out
}

#[test]
fn project_finetune_embed_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = pretrained(dir.path());
    let proj = dir.path().join("project");
    let mut a = vec!["--images", s(&images), "--from", s(&pre), "--out", s(&proj)];
    a.extend(TRAIN);
    ok(PROJECT, &a);

    // The freeze: only the new layer, the BatchNorm running statistics and
    // the BatchNorm counter differ from pretrain's (BatchNorm still runs in
    // training mode, as in the reference).
    let (before, after) = (state(&pre), state(&proj));
    assert_eq!(before.len(), after.len());
    for (name, t) in &after {
        let new_layer = name.starts_with("projection_head.layers.2.");
        let bn_stat = name.contains("running_") || name.ends_with("num_batches_tracked");
        if new_layer {
            assert_eq!(t.dims()[0], 2, "{name}");
        } else if bn_stat {
            assert_ne!(
                bits(t),
                bits(&before[name]),
                "{name} should move in training mode"
            );
        } else {
            assert_eq!(
                bits(t),
                bits(&before[name]),
                "{name} changed during project"
            );
        }
    }

    let fine = dir.path().join("finetune");
    let mut a = vec![
        "--images",
        s(&images),
        "--from",
        s(&proj),
        "--out",
        s(&fine),
        "--warmup",
        "0",
    ];
    a.extend(TRAIN);
    ok(FINETUNE, &a);
    let emb = dir.path().join("embedded.parquet");
    ok(
        EMBED,
        &[
            "--model",
            s(&fine),
            "--images",
            s(&images),
            "--out",
            s(&emb),
        ],
    );
    assert_eq!(
        std::fs::read(&emb).unwrap(),
        std::fs::read(fine.join("embedding.parquet")).unwrap()
    );

    // Wrong stage order and wrong images are refused, naming the problem.
    let mut a = vec!["--images", s(&images), "--from", s(&pre), "--out", s(&fine)];
    a.extend(TRAIN);
    run(FINETUNE, &a).assert_user_error(
        "pretrain",
        &["this is a pretrain model directory", "output of project"],
    );
    let other = dir.path().join("other.parquet");
    let root = dir.path().join("rgb");
    for i in 0..4u8 {
        save_rgb(&root.join(format!("{i}.png")), 28, 28, |x, _| {
            [x as u8, i, 0]
        });
    }
    ok(PREP, &["folder", "--input", s(&root), "--out", s(&other)]);
    run(
        EMBED,
        &["--model", s(&fine), "--images", s(&other), "--out", s(&emb)],
    )
    .assert_user_error("other.parquet", &["28x28x3", "the model takes 28x28x1"]);
    run(
        EMBED,
        &[
            "--model",
            s(&images),
            "--images",
            s(&images),
            "--out",
            s(&emb),
        ],
    )
    .assert_user_error("images.parquet", &["not a readable safetensors file"]);
}

#[test]
fn three_dimensional_map() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = pretrained(dir.path());
    let proj = dir.path().join("p3");
    let mut a = vec![
        "--images",
        s(&images),
        "--from",
        s(&pre),
        "--out",
        s(&proj),
        "--out-dim",
        "3",
    ];
    a.extend(TRAIN);
    ok(PROJECT, &a);
    let f = std::fs::File::open(proj.join("embedding.parquet")).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "label", "x", "y", "z"]);
    assert_eq!(b.metadata().file_metadata().num_rows(), 96);
}

/// `--map-scale` is recorded in config.json (so it enters the resume
/// fingerprint), trains a finite map in both 2-D stages, and a value that is
/// not a finite positive number is a one-line error before any work.
#[test]
fn map_scale_is_recorded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = pretrained(dir.path());
    let proj = dir.path().join("p");
    let fine = dir.path().join("f");
    let stage = |from: &Path, out: &Path, scale: &str| {
        let mut a = vec![
            "--images".to_string(),
            s(&images).into(),
            "--from".into(),
            s(from).into(),
            "--out".into(),
            s(out).into(),
            // One argument, so that clap reads "-2" as a value.
            format!("--map-scale={scale}"),
        ];
        a.extend(TRAIN.iter().map(|t| t.to_string()));
        a
    };
    ok_owned(PROJECT, &stage(&pre, &proj, "5"));
    ok_owned(FINETUNE, &stage(&proj, &fine, "5"));
    for d in [&proj, &fine] {
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        assert!(text.contains("\"map_scale\": 5.0"), "{text}");
        let f = std::fs::File::open(d.join("embedding.parquet")).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        for batch in r {
            let batch = batch.unwrap();
            for c in ["x", "y"] {
                let col = batch.column_by_name(c).unwrap();
                let v = col
                    .as_any()
                    .downcast_ref::<arrow_array::Float32Array>()
                    .unwrap();
                assert!(v.values().iter().all(|x| x.is_finite()), "{c}");
            }
        }
    }
    // Without the flag nothing is recorded (the recipe).
    let plain = dir.path().join("plain");
    let mut a = stage(&pre, &plain, "1");
    a.truncate(6);
    a.extend(TRAIN.iter().map(|t| t.to_string()));
    ok_owned(PROJECT, &a);
    let text = std::fs::read_to_string(plain.join("config.json")).unwrap();
    assert!(!text.contains("map_scale"), "{text}");
    for bad in ["0", "-2", "NaN", "inf"] {
        let out = dir.path().join(format!("bad{bad}"));
        let args = stage(&proj, &out, bad);
        let r = run(
            FINETUNE,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        r.assert_user_error("", &["map scale", bad]);
        assert!(!out.join("config.json").exists());
    }
}

/// `embed` places images with a model exported from the PyTorch reference
/// (a bare safetensors file with the reference names, no config.json).
#[test]
fn embed_loads_a_pytorch_export() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new");
    for i in 0..5u8 {
        save_rgb(&root.join(format!("{i}.png")), 12, 12, |x, y| {
            [x as u8 * 20, y as u8 * 20, i * 40]
        });
    }
    let images = dir.path().join("new.parquet");
    ok(PREP, &["folder", "--input", s(&root), "--out", s(&images)]);
    let export = repo_root().join("tests/golden/tiny_weights.safetensors");
    let out = dir.path().join("e.parquet");
    ok(
        EMBED,
        &[
            "--model",
            s(&export),
            "--images",
            s(&images),
            "--out",
            s(&out),
        ],
    );
    let f = std::fs::File::open(&out).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    assert_eq!(b.metadata().file_metadata().num_rows(), 5);
    // 8 output dimensions: one vector column.
    let t = b
        .schema()
        .field_with_name("embedding")
        .unwrap()
        .data_type()
        .to_string();
    assert!(t.contains("8"), "{t}");
}

/// Runs `bin` until its first checkpoint appears in `out`, kills it (-9),
/// then runs it again to the end.
fn kill_and_rerun(bin: &str, args: &[String], out: &Path) {
    use std::process::Command;
    use std::time::{Duration, Instant};
    let mut child = Command::new(stage(bin)).args(args).spawn().unwrap();
    let t0 = Instant::now();
    while !out.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    ok_owned(bin, args);
}

/// project and finetune resume like pretrain: kill -9, rerun, same bytes.
#[test]
fn project_and_finetune_resume_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = pretrained(dir.path());
    let stage_args = |from: &Path, out: &Path| -> Vec<String> {
        [
            "--images",
            s(&images),
            "--from",
            s(from),
            "--out",
            s(out),
            "--batch-size",
            "32",
            "--threads",
            "2",
            "--seed",
            "3",
            "--epochs",
            "3",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let d = dir.path();
    let (clean, killed) = (d.join("clean"), d.join("killed"));
    ok_owned(PROJECT, &stage_args(&pre, &clean));
    kill_and_rerun(PROJECT, &stage_args(&pre, &killed), &killed);
    let (fclean, fkilled) = (d.join("fclean"), d.join("fkilled"));
    ok_owned(FINETUNE, &stage_args(&clean, &fclean));
    kill_and_rerun(FINETUNE, &stage_args(&killed, &fkilled), &fkilled);
    for (a, b) in [(&clean, &killed), (&fclean, &fkilled)] {
        for f in ["model.safetensors", "embedding.parquet"] {
            assert!(
                std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
                "{}: {f}",
                b.display()
            );
        }
    }
}

/// A model directory whose config and weights disagree is refused.
#[test]
fn mismatched_out_dim_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = pretrained(dir.path());
    let (p2, p3) = (dir.path().join("p2"), dir.path().join("p3"));
    for (out, d) in [(&p2, "2"), (&p3, "3")] {
        let mut a = vec![
            "--images",
            s(&images),
            "--from",
            s(&pre),
            "--out",
            s(out),
            "--out-dim",
            d,
        ];
        a.extend(TRAIN);
        ok(PROJECT, &a);
    }
    std::fs::copy(p3.join("config.json"), p2.join("config.json")).unwrap();
    let emb = dir.path().join("e.parquet");
    run(
        EMBED,
        &["--model", s(&p2), "--images", s(&images), "--out", s(&emb)],
    )
    .assert_user_error(
        "model.safetensors",
        &["projection_head.layers.2.weight has shape [2, 32], expected [3, 32]"],
    );
    assert!(!emb.exists());
}

/// `finetune --freeze-layers 2`: the stem, layer1 and layer2 (weights and
/// BatchNorm statistics) leave the stage bit-identical to project's, the
/// rest trains; with flip-only views (activations cached per image and
/// flip) and with full augmentation (frozen layers run per batch); our
/// kernels against candle's (an independent implementation of the same
/// freezing, which never caches); a kill and rerun gives the same bytes;
/// project and too many layers are refused.
#[test]
fn frozen_layers_stay_fixed_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (images, pre) = pretrained(d);
    let args = |from: &Path, out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--images",
            s(&images),
            "--from",
            s(from),
            "--out",
            s(out),
            "--batch-size",
            "32",
            "--threads",
            "2",
            "--seed",
            "3",
            "--epochs",
            "3",
            "--warmup",
            "0",
            "--lr",
            "0.05",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let flips = ["--crop-min", "1", "--jitter-p", "0", "--knn-positives", "3"];
    let proj = d.join("p");
    ok_owned(PROJECT, &args(&pre, &proj, &flips));
    let before = state(&proj);
    let frozen = |name: &str| {
        [
            "backbone.conv1.",
            "backbone.bn1.",
            "backbone.layer1.",
            "backbone.layer2.",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    };
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut e = extra.to_vec();
        e.extend(["--freeze-layers", "2"]);
        e
    }
    let check = |out: &Path| {
        let after = state(out);
        let mut trained = 0;
        for (name, t) in &before {
            if name.ends_with("num_batches_tracked") {
                continue; // one counter for the whole model (FORMATS.md)
            }
            let same = bits(t) == bits(&after[name]);
            if frozen(name) {
                assert!(same, "{}: frozen {name} changed", out.display());
            } else if !same {
                trained += 1;
            }
        }
        assert!(
            trained > 10,
            "{}: only {trained} tensors trained",
            out.display()
        );
        let text = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(text.contains("\"freeze_layers\": 2"), "{text}");
    };
    let (cached, candle, killed, augmented) = (d.join("c"), d.join("k"), d.join("x"), d.join("a"));
    ok_owned(FINETUNE, &args(&proj, &cached, &with(&flips)));
    check(&cached);
    let mut on_candle = with(&flips);
    on_candle.extend(["--kernels", "candle"]);
    ok_owned(FINETUNE, &args(&proj, &candle, &on_candle));
    check(&candle);
    let (ours, theirs) = (state(&cached), state(&candle));
    for (name, a) in &ours {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = theirs[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 2e-3 * scale,
                "{name}: ours {x}, candle {y}"
            );
        }
    }
    kill_and_rerun(FINETUNE, &args(&proj, &killed, &with(&flips)), &killed);
    for f in ["model.safetensors", "embedding.parquet"] {
        assert!(
            std::fs::read(cached.join(f)).unwrap() == std::fs::read(killed.join(f)).unwrap(),
            "{f} after kill and rerun"
        );
    }
    // A flag given twice: the last one counts (args_override_self).
    ok_owned(
        FINETUNE,
        &args(&proj, &augmented, &with(&["--freeze-layers", "9"])),
    );
    check(&augmented);
    let bad = d.join("bad");
    let r = run(
        PROJECT,
        &args(&pre, &bad, &["--freeze-layers", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    r.assert_user_error("", &["frozen layers are for finetune"]);
    let r = run(
        FINETUNE,
        &args(&proj, &bad, &["--freeze-layers", "5"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    r.assert_user_error("", &["4 stages", "5"]);
    assert!(!bad.join("config.json").exists());
}
