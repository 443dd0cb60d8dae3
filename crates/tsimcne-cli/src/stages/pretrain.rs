//! `pretrain`: contrastive pretraining with the 128-D output (stage 1 of 3).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::train_args::{AugmentArgs, RunArgs, Schedule, TrainArgs, run_key, train_options};
use crate::{TrainBar, run_main, set_compute_threads};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use tsimcne_format::model_config::Normalize;
use tsimcne_train::stage::{PretrainConfig, pretrain};

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
    #[command(flatten)]
    schedule: Schedule,
    /// Network preset: resnet18 (the paper's), small (CPU), tiny (tests).
    #[arg(long, default_value = "resnet18", value_parser = ["resnet18", "small", "tiny"])]
    backbone: String,
    #[arg(long, default_value_t = 128)]
    out_dim: usize,
    /// Per-channel normalisation after the augmentations.
    #[arg(long, value_enum, default_value_t = NormalizeArg::None)]
    normalize: NormalizeArg,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    augment: AugmentArgs,
}

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let cmd = Schedule::defaults(Args::command(), "1000", "10", "0.03 × batch-size / 256");
    let matches = cmd.clone().get_matches_from(argv);
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if args.run.print_key {
        print!("{}", run_key(&cmd, &matches));
        return ExitCode::SUCCESS;
    }
    set_compute_threads(args.run.threads());
    run_main(|| run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let schedule = args.schedule;
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
        backbone: args.backbone,
        out_dim: args.out_dim,
        normalize,
        train: train_options(schedule, &args.train, &args.run, &args.augment)?,
    };
    let summary = pretrain(&cfg, &TrainBar::new(cfg.train.batch_size))?;
    let last = summary.epochs.last().map_or(f64::NAN, |l| l.loss);
    eprintln!(
        "wrote {}: {} epochs on {} images, final loss {last:.4}",
        summary.out.display(),
        cfg.train.epochs,
        summary.images
    );
    Ok(())
}
