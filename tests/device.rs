//! `--device` on the CPU: every stage that takes it records the device in
//! `config.json`; in a build without the `cuda` feature, `--device cuda`
//! is one `error:` line and exit code 1 before any work, in every stage;
//! an unknown name is a usage error; `--kernels fast` on a GPU in a CPU build
//! is refused.
//! (The GPU itself is tested by tests/cuda.rs, in the CUDA build.)

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use tsimcne_format::model_config::ModelConfig;

const PRETRAIN: &str = "pretrain";

/// 64 images and a tiny pretrained model (one epoch, on the CPU).
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("images.parquet");
    embedded_subset(&images, 64);
    let pre = dir.join("pretrain");
    let r = run(PRETRAIN, &pretrain_args(&images, &pre, "cpu"));
    assert!(r.ok(), "{}", r.stderr);
    (images, pre)
}

fn pretrain_args<'a>(images: &'a Path, out: &'a Path, device: &'a str) -> Vec<&'a str> {
    let flags = [("--batch-size", "32"), ("--device", device)];
    with_flags(tiny_pretrain_args(images, out, "1"), &flags)
}

#[test]
fn the_device_is_recorded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = inputs(dir.path());
    let cfg = ModelConfig::load(&pre.join("config.json")).unwrap();
    assert_eq!(cfg.training.device.as_deref(), Some("cpu"));

    // An unknown name: clap's usage error, exit 2.
    let out = dir.path().join("bad");
    let r = run(PRETRAIN, &pretrain_args(&images, &out, "gpu"));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("unknown device"), "{}", r.stderr);

    // Our kernels on a GPU, in a CPU build: the way to the CUDA build.
    #[cfg(not(feature = "cuda"))]
    {
        let mut a = pretrain_args(&images, &out, "cuda");
        a.extend(["--kernels", "fast"]);
        run(PRETRAIN, &a).assert_user_error("--kernels fast", &["CUDA build", "cuda:0"]);
        assert!(!out.exists());
    }
}

/// Without the `cuda` feature, a GPU is refused in one line naming the
/// device and the way to a CUDA build, before anything is written.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_build_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let (images, pre) = inputs(dir.path());
    let out = dir.path().join("out");
    let phrases = ["no CUDA support", "scripts/build-cuda.sh"];
    run(PRETRAIN, &pretrain_args(&images, &out, "cuda")).assert_user_error("cuda:0", &phrases);
    let project = "project";
    let finetune = "finetune";
    for (bin, device) in [(project, "cuda"), (finetune, "cuda:1")] {
        let r = run(
            bin,
            &[
                "--images",
                s(&images),
                "--from",
                s(&pre),
                "--out",
                s(&out),
                "--device",
                device,
            ],
        );
        r.assert_user_error(if device == "cuda" { "cuda:0" } else { device }, &phrases);
    }
    let emb = dir.path().join("embedding.parquet");
    run(
        "embed",
        &[
            "--model",
            s(&pre),
            "--images",
            s(&images),
            "--out",
            s(&emb),
            "--device",
            "cuda",
        ],
    )
    .assert_user_error("cuda:0", &phrases);
    assert!(!out.exists() && !emb.exists(), "nothing is written");
}
