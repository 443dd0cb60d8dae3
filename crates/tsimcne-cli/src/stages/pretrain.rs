//! `pretrain`: contrastive pretraining with the 128-D output (stage 1 of 3).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::two_d::AugmentArgs;
use crate::{TrainBar, default_threads, kernels_for, run_main, set_compute_threads};
use anyhow::bail;
use clap::{Parser, ValueEnum};
use tsimcne_format::model_config::Normalize;
use tsimcne_model::{ConvMath, DeviceSpec, Kernels};
use tsimcne_train::stage::{LossKind, PretrainConfig, pretrain};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum NormalizeArg {
    /// Keep pixels in [0, 1] (the released library).
    None,
    /// CIFAR-10 mean and std (the paper's code).
    Cifar10,
    /// CIFAR-100 mean and std.
    Cifar100,
}

/// Contrastive pretraining (t-SimCNE stage 1): trains a ResNet with a
/// 128-D output on two augmented views of every image. Writes
/// model.safetensors, config.json, log.csv and features.parquet into --out,
/// checkpointing every --checkpoint-every epochs; rerunning the same command
/// resumes from the last checkpoint.
#[derive(Debug, Parser)]
#[command(name = "pretrain", version, about, long_about)]
struct Args {
    /// The image table (from prep).
    #[arg(long)]
    images: PathBuf,
    /// The output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    epochs: usize,
    /// Images per batch; each image gives two views.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Learning rate [default: 0.03 × batch-size / 256].
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up epochs (linear from 0).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// SGD's L2 weight decay.
    #[arg(long, default_value_t = tsimcne_train::sgd::SgdConfig::default().weight_decay)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Network preset: resnet18 (the paper's), small (CPU), tiny (tests).
    #[arg(long, default_value = "resnet18", value_parser = ["resnet18", "small", "tiny"])]
    backbone: String,
    #[arg(long, default_value_t = 128)]
    out_dim: usize,
    #[arg(long, value_enum, default_value_t = LossKind::Cauchy)]
    loss: LossKind,
    /// Per-channel normalisation after the augmentations.
    #[arg(long, value_enum, default_value_t = NormalizeArg::None)]
    normalize: NormalizeArg,
    /// Threads for training and augmentation [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Where to train: cpu, cuda (the first GPU) or cuda:N; a GPU needs the
    /// CUDA build (scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// The backbone's implementation [default: fast; candle where fast does not run].
    #[arg(long, value_enum)]
    kernels: Option<Kernels>,
    /// On a GPU with our kernels: the convolutions' arithmetic, exact f32 or
    /// TF32 tensor cores (faster; recorded in config.json).
    #[arg(long, value_enum, default_value = "exact")]
    conv_math: ConvMath,
    /// Save a checkpoint every N epochs.
    #[arg(long, default_value_t = 1)]
    checkpoint_every: usize,
    /// Start over, discarding a checkpoint made with other settings.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    augment: AugmentArgs,
}

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    set_compute_threads(threads);
    run_main(|| run(args, threads))
}

fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    if args.epochs == 0 || args.out_dim == 0 || args.checkpoint_every == 0 {
        bail!("--epochs, --out-dim and --checkpoint-every must be positive");
    }
    let kernels = kernels_for(args.kernels, args.device)?;
    let augment = args.augment.settings()?;
    let normalize = match args.normalize {
        NormalizeArg::None => None,
        NormalizeArg::Cifar10 => Some(Normalize {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2023, 0.1994, 0.2010],
        }),
        NormalizeArg::Cifar100 => Some(Normalize {
            mean: vec![0.5071, 0.4867, 0.4408],
            std: vec![0.2675, 0.2565, 0.2761],
        }),
    };
    let cfg = PretrainConfig {
        images: args.images,
        out: args.out,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        seed: args.seed,
        backbone: args.backbone,
        out_dim: args.out_dim,
        loss: args.loss,
        threads,
        checkpoint_every: args.checkpoint_every,
        restart: args.restart,
        normalize,
        device: args.device,
        kernels,
        conv_math: args.conv_math,
        augment,
    };
    let summary = pretrain(&cfg, &TrainBar::new(cfg.batch_size))?;
    let last = summary.epochs.last().map_or(f64::NAN, |l| l.loss);
    eprintln!(
        "wrote {}: {} epochs on {} images, final loss {last:.4}",
        summary.out.display(),
        cfg.epochs,
        summary.images
    );
    Ok(())
}
