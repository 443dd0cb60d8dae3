//! `pretrain`'s flags.

use std::path::PathBuf;

use clap::{Command, CommandFactory, Parser};
use tsimcne_format::model_config::NormalizePreset;
use tsimcne_train::stage::PretrainConfig;

use crate::flags::train::{AugmentArgs, RunArgs, Schedule, TrainArgs, train_options};

/// Contrastive pretraining (t-SimCNE stage 1): trains a ResNet with a
/// 128-D output on two augmented views of every image. Writes
/// model.safetensors, config.json, log.csv and features.parquet into --out,
/// checkpointing every --checkpoint-every epochs; rerunning the same command
/// resumes from the last checkpoint.
#[derive(Debug, Parser)]
#[command(name = "pretrain", version, about, long_about)]
pub struct Args {
    /// The image table (from prep).
    #[arg(long)]
    images: PathBuf,
    /// The output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    schedule: Schedule,
    /// Network preset: resnet18 (the paper's), small (CPU), tiny (tests).
    #[arg(long, default_value = "resnet18", value_parser = tsimcne_model::PRESETS)]
    backbone: String,
    #[arg(long, default_value_t = 128)]
    out_dim: usize,
    /// Per-channel normalisation after the augmentations.
    #[arg(long, value_enum, default_value_t = NormalizePreset::None)]
    normalize: NormalizePreset,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    augment: AugmentArgs,
}

/// `pretrain`'s command, with the recipe's defaults.
pub fn command() -> Command {
    Schedule::defaults(Args::command(), "1000", "10", "0.03 × batch-size / 256")
}

impl Args {
    /// The library's config, checked.
    pub fn config(self) -> anyhow::Result<PretrainConfig> {
        Ok(PretrainConfig {
            images: self.images,
            out: self.out,
            backbone: self.backbone,
            out_dim: self.out_dim,
            normalize: self.normalize.stats(),
            train: train_options(self.schedule, &self.train, &self.run, &self.augment)?,
        })
    }
}
