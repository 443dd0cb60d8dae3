//! The stages on a CUDA GPU against the CPU. Built only with the `cuda`
//! feature (`cargo test -p tsimcne-cli --features cuda --test cuda`, see
//! scripts/build-cuda.sh); runs with `TSIMCNE_TEST_CUDA=1` on a machine with
//! an NVIDIA GPU and is skipped with a note otherwise.
//!
//! From the same seed, pretrain (tiny preset, four steps), project and
//! finetune on `--device cuda` (each `--gpu-path`, exact f32 convolutions:
//! `--conv-math exact`, not the default TF32) give the losses,
//! weights, features and maps of the CPU run within float rounding; `embed --device cuda` places the
//! CPU model's images where the CPU does; a CUDA stage rerun after its
//! outputs are lost writes them again from its checkpoint, byte for byte.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use tsimcne_format::model_config::ModelConfig;

const PRETRAIN: &str = "pretrain";
const PROJECT: &str = "project";
const FINETUNE: &str = "finetune";
const EMBED: &str = "embed";

fn requested() -> bool {
    let on = std::env::var_os("TSIMCNE_TEST_CUDA").is_some();
    if !on {
        eprintln!("note: CPU/CUDA comparison skipped; set TSIMCNE_TEST_CUDA=1 on a GPU machine");
    }
    on
}

/// Asserts max |a − b| ≤ tol · max(1, max |b|) (`b` from the CPU).
fn close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: CUDA and CPU differ by up to {diff:e} (scale {scale:e}, tolerance {tol:e})"
    );
}

fn state(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn vectors(path: &Path, column: Option<&str>) -> Vec<f64> {
    tsimcne_format::vectors::read_vectors(path, column)
        .unwrap()
        .values
        .into_iter()
        .map(f64::from)
        .collect()
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn compare_models(what: &str, cuda: &Path, cpu: &Path, tol: f64) {
    let (a, b) = (state(cuda), state(cpu));
    assert_eq!(a.len(), b.len());
    for (name, t) in &b {
        close(
            &format!("{what} {name}"),
            &values(&a[name]),
            &values(t),
            tol,
        );
    }
    close(&format!("{what} loss"), &losses(cuda), &losses(cpu), tol);
}

#[test]
fn stages_on_cuda_agree_with_the_cpu() {
    if !requested() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("images.parquet");
    embedded_subset(&images, 128);
    let common = ["--batch-size", "64", "--threads", "2", "--seed", "7"];
    let stage_dir = |stage: &str, dev: &str| -> PathBuf { d.join(format!("{stage}-{dev}")) };
    // "cuda-next": the kernels not yet run on a GPU before (`--gpu-path
    // next`: split batch-norm sums, fused SGD, augmentation on the GPU).
    // Exact f32 convolutions, for the CPU's results within float rounding
    // (the default, TF32, rounds products to 10 bits).
    let runs: [(&str, &[&str]); 3] = [
        ("cpu", &["--device", "cpu"]),
        ("cuda", &["--device", "cuda", "--conv-math", "exact"]),
        (
            "cuda-next",
            &[
                "--device",
                "cuda",
                "--gpu-path",
                "next",
                "--conv-math",
                "exact",
            ],
        ),
    ];
    for (dev, device) in runs {
        let pre = stage_dir("pretrain", dev);
        let mut a = vec!["--images", s(&images), "--out", s(&pre)];
        a.extend(device);
        a.extend(["--backbone", "tiny", "--epochs", "2", "--warmup", "1"]);
        a.extend(common);
        ok(PRETRAIN, &a);
        let proj = stage_dir("project", dev);
        let mut a = vec!["--images", s(&images), "--from", s(&pre), "--out", s(&proj)];
        a.extend(device);
        a.extend(["--epochs", "1"]);
        a.extend(common);
        ok(PROJECT, &a);
        let fine = stage_dir("finetune", dev);
        let mut a = vec![
            "--images",
            s(&images),
            "--from",
            s(&proj),
            "--out",
            s(&fine),
        ];
        a.extend(device);
        a.extend(["--epochs", "1", "--warmup", "0"]);
        a.extend(common);
        ok(FINETUNE, &a);
    }
    let cfg = ModelConfig::load(&stage_dir("pretrain", "cuda").join("config.json")).unwrap();
    assert_eq!(cfg.training.device.as_deref(), Some("cuda:0"));
    assert_eq!(
        cfg.training.conv_math, None,
        "exact f32 is recorded as absent"
    );

    let pre_cpu = stage_dir("pretrain", "cpu");
    for gpu in ["cuda", "cuda-next"] {
        let pre_gpu = stage_dir("pretrain", gpu);
        compare_models(&format!("{gpu} pretrain"), &pre_gpu, &pre_cpu, 1e-3);
        for column in ["backbone", "head"] {
            close(
                &format!("{gpu} features {column}"),
                &vectors(&pre_gpu.join("features.parquet"), Some(column)),
                &vectors(&pre_cpu.join("features.parquet"), Some(column)),
                1e-3,
            );
        }
        for stage in ["project", "finetune"] {
            let (g, cpu) = (stage_dir(stage, gpu), stage_dir(stage, "cpu"));
            compare_models(&format!("{gpu} {stage}"), &g, &cpu, 1e-3);
            close(
                &format!("{gpu} {stage} map"),
                &vectors(&g.join("embedding.parquet"), None),
                &vectors(&cpu.join("embedding.parquet"), None),
                1e-3,
            );
        }
    }
    let pre_gpu = stage_dir("pretrain", "cuda");

    // One model, two devices: only the forward passes' rounding differs.
    let fine_cpu = stage_dir("finetune", "cpu");
    let emb = d.join("embedded-on-cuda.parquet");
    ok(
        EMBED,
        &[
            "--model",
            s(&fine_cpu),
            "--images",
            s(&images),
            "--out",
            s(&emb),
            "--device",
            "cuda",
        ],
    );
    close(
        "embed --device cuda",
        &vectors(&emb, None),
        &vectors(&fine_cpu.join("embedding.parquet"), None),
        1e-4,
    );

    // Outputs lost after the last checkpoint: the rerun restores the model
    // from the checkpoint on the GPU and saves it again from there.
    let model = std::fs::read(pre_gpu.join("model.safetensors")).unwrap();
    for f in ["config.json", "model.safetensors", "features.parquet"] {
        std::fs::remove_file(pre_gpu.join(f)).unwrap();
    }
    let mut a = vec![
        "--images",
        s(&images),
        "--out",
        s(&pre_gpu),
        "--device",
        "cuda",
        "--conv-math",
        "exact",
    ];
    a.extend(["--backbone", "tiny", "--epochs", "2", "--warmup", "1"]);
    a.extend(common);
    ok(PRETRAIN, &a);
    assert_eq!(
        std::fs::read(pre_gpu.join("model.safetensors")).unwrap(),
        model
    );
    assert_eq!(losses(&pre_gpu).len(), 2);
}
