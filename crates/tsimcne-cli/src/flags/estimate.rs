//! `estimate`'s flags.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use tsimcne_augment::AugmentConfig;
use tsimcne_model::preset::preset;
use tsimcne_train::estimate::{EstimateConfig, TableSample};

use crate::default_threads;
use crate::flags::two_d::finetune_views;

/// Prints how long a CPU run's training will take here: times a few
/// training steps of each stage's kind (pretraining; the output layer alone,
/// as `project`; everything in 2-D, as `finetune`), augmentation included,
/// on the table's first images, and scales them by the epochs.
/// About a second for the `small` network on small images.
#[derive(Debug, Parser)]
#[command(name = "estimate", version, about, long_about)]
pub struct Args {
    /// The image table (from prep): the number of images and their shape.
    #[arg(long)]
    images: PathBuf,
    /// Network preset: resnet18 (the paper's), small (CPU), tiny (tests).
    #[arg(long, default_value = "resnet18", value_parser = tsimcne_model::PRESETS)]
    pub backbone: String,
    /// Images per batch; each image gives two views.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// The epochs of pretrain, project and finetune.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        default_value = "1000,50,450"
    )]
    epochs: Vec<usize>,
    /// The pretraining's output dimension.
    #[arg(long, default_value_t = 128)]
    out_dim: usize,
    /// The map's dimension.
    #[arg(long, default_value_t = 2)]
    map_dim: usize,
    /// Threads, as the run will use them [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// A name to start the line with (e.g. the dataset).
    #[arg(long, default_value = "training")]
    pub label: String,
    /// The 2-D stages' flags, as passed to them (read by finetune's own
    /// parser, so they must be finetune's); their --crop-min and
    /// --jitter-p set the augmentation timed for project and finetune, and
    /// --freeze-layers the finetune's frozen stages; the others are ignored. Pretraining is timed with the recipe's
    /// augmentation.
    #[arg(last = true, allow_hyphen_values = true)]
    map_flags: Vec<String>,
}

impl Args {
    /// `--threads`, or all cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads).max(1)
    }

    /// The library's config, checked, with the table's first images.
    pub fn config(&self) -> anyhow::Result<EstimateConfig> {
        let &[pretrain_epochs, project_epochs, finetune_epochs] = &self.epochs[..] else {
            bail!("--epochs takes three numbers: pretrain,project,finetune");
        };
        let views = finetune_views(&self.map_flags)?;
        let table = TableSample::read(&self.images, self.batch_size)?;
        let mut map_augment = AugmentConfig::default();
        map_augment.crop_scale.0 = views.crop_min;
        map_augment.jitter_p = views.jitter_p;
        Ok(EstimateConfig {
            arch: preset(&self.backbone, table.shape.channels, self.out_dim)?,
            map_dim: self.map_dim,
            shape: table.shape,
            images: table.images,
            batch_size: self.batch_size.min(table.images),
            pretrain_epochs,
            project_epochs,
            finetune_epochs,
            pretrain_augment: AugmentConfig::default(),
            map_augment,
            finetune_freeze_layers: views.freeze_layers,
            threads: self.threads(),
            sample: table.pixels,
        })
    }
}
