//! The shared command line of `project` and `finetune`: the same flags, with
//! each stage's recipe defaults set on the clap command (so `--help` shows
//! them).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Command, CommandFactory, FromArgMatches, Parser};
use tsimcne_train::stage::{LossKind, OutputInit, TwoDConfig, TwoDStage, train_2d};

use tsimcne_format::model_config::{AugmentSettings, KnnSpace};
use tsimcne_model::{ConvMath, DeviceSpec, Kernels};

use crate::{TrainBar, default_threads, kernels_for, run_main, set_compute_threads};

/// The augmentation flags every training stage shares; the defaults are
/// the recipe's.
#[derive(Debug, Clone, Copy, Args)]
pub struct AugmentArgs {
    /// Lower bound of the random crop's area scale (RandomResizedCrop scale
    /// CROP_MIN–1); larger is weaker.
    #[arg(long, default_value_t = AugmentSettings::RECIPE.crop_min)]
    pub crop_min: f64,
    /// Probability of the colour jitter (brightness, contrast, saturation,
    /// hue 0.4/0.4/0.4/0.1); 0 turns it off.
    #[arg(long, default_value_t = AugmentSettings::RECIPE.jitter_p)]
    pub jitter_p: f64,
    /// Opt-in, not t-SimCNE: make each image's second view from one of its
    /// K nearest images in pixel space (Euclidean), as in contrastive
    /// neighbour embeddings; 0 keeps both views of the image itself. Pixel
    /// neighbours are semantic on simple images (digits, Fashion-MNIST), not
    /// on natural ones (CIFAR).
    #[arg(long, default_value_t = AugmentSettings::RECIPE.knn_positives, value_name = "K")]
    pub knn_positives: usize,
    /// Where the --knn-positives neighbours are found: pixels, features (the
    /// backbone features of the --from model; 2-D stages), both (either
    /// list) or joint (one list, by the mean of the pixel and the feature
    /// cosine similarities, each space centred on its mean).
    #[arg(long, value_enum, default_value_t = KnnSpace::Pixels)]
    pub knn_space: KnnSpace,
    /// Recompute the feature-space neighbours from the model being trained
    /// every N epochs (0: never; a 2-D stage computes them once at its start).
    #[arg(long, default_value_t = AugmentSettings::RECIPE.knn_refresh, value_name = "N")]
    pub knn_refresh: usize,
}

impl AugmentArgs {
    /// The settings, checked.
    pub fn settings(self) -> anyhow::Result<AugmentSettings> {
        let s = AugmentSettings {
            crop_min: self.crop_min,
            jitter_p: self.jitter_p,
            knn_positives: self.knn_positives,
            knn_space: self.knn_space,
            knn_refresh: self.knn_refresh,
        };
        s.check()
            .map_err(|e| anyhow::anyhow!("--crop-min/--jitter-p: {e}"))?;
        if s.knn_positives == 0 && (!s.knn_space.is_pixels() || s.knn_refresh > 0) {
            anyhow::bail!("--knn-space and --knn-refresh need --knn-positives K > 0");
        }
        Ok(s)
    }
}

/// The flags of a 2-D stage.
#[derive(Debug, Args)]
pub struct TwoDArgs {
    /// The image table (from prep).
    #[arg(long)]
    images: PathBuf,
    /// The previous stage's model directory.
    #[arg(long)]
    from: PathBuf,
    /// The output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch; each image gives two views.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Learning rate [default: the stage's recipe value, from the batch size].
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up epochs (linear from 0).
    #[arg(long)]
    warmup: Option<usize>,
    /// SGD's L2 weight decay.
    #[arg(long, default_value_t = tsimcne_train::sgd::SgdConfig::default().weight_decay)]
    weight_decay: f64,
    /// Opt-in, not the recipe: the loss sees each batch's map centred and
    /// scaled to this root mean square coordinate, so the network cannot
    /// lower it by pushing clusters ever further apart (about 11 is where
    /// free 2-D points settle on 10,000 images at batch 256) [default: off,
    /// the output as it is].
    #[arg(long)]
    map_scale: Option<f64>,
    /// Finetune only, opt-in: keep the stem and the first N of the
    /// backbone's stages as project left them (BatchNorm in eval mode) and
    /// train the rest; 0 trains everything (the recipe). With views fixed
    /// up to a mirror (--crop-min 1 --jitter-p 0) their output is computed
    /// once per image and flip, so each epoch skips them.
    #[arg(long, default_value_t = 0, value_name = "N")]
    freeze_layers: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Dimension of the map: 2, or 3 for a 3-D map (project only; finetune keeps its input's).
    #[arg(long, default_value_t = 2)]
    out_dim: usize,
    #[arg(long, value_enum, default_value_t = LossKind::Cauchy)]
    loss: LossKind,
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
    /// Project only: how the new output layer starts. `random`: the
    /// recipe's fresh layer; `pca`: the PCA of the pretrained 128-D outputs.
    #[arg(long, value_enum, default_value_t = OutputInit::Random)]
    init: OutputInit,
    #[command(flatten)]
    augment: AugmentArgs,
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: TwoDArgs,
}

fn command(stage: TwoDStage) -> Command {
    let (epochs, warmup, about) = match stage {
        TwoDStage::Project => (
            "50",
            "0",
            "t-SimCNE stage 2: replaces the pretrained model's last layer by a fresh 1024→2 layer \
             (weights N(0,1)) and trains only that layer. Writes model.safetensors, config.json, \
             log.csv and embedding.parquet into --out; rerunning resumes from the last checkpoint.",
        ),
        TwoDStage::Finetune => (
            "450",
            "10",
            "t-SimCNE stage 3: trains every parameter of the projected model at a thousandth of \
             the learning rate. Writes model.safetensors, config.json, log.csv and \
             embedding.parquet into --out; rerunning resumes from the last checkpoint.",
        ),
    };
    Cli::command()
        .name(stage.name())
        // A flag given again overrides the earlier one, so that a flag
        // appended to a preset's (make's FINETUNE_FLAGS=...) wins.
        .args_override_self(true)
        .about(about)
        .mut_arg("epochs", |a| a.default_value(epochs))
        .mut_arg("warmup", |a| a.default_value(warmup))
}

/// `main` of `project` and `finetune`: `argv` is the command line, the
/// stage's name first.
pub fn main(stage: TwoDStage, argv: Vec<OsString>) -> ExitCode {
    let matches = command(stage).get_matches_from(argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let a = cli.args;
    let threads = a.threads.unwrap_or_else(default_threads).max(1);
    set_compute_threads(threads);
    run_main(|| {
        let epochs = a.epochs.unwrap_or(0);
        if epochs == 0 || a.out_dim == 0 || a.checkpoint_every == 0 {
            bail!("--epochs, --out-dim and --checkpoint-every must be positive");
        }
        if stage == TwoDStage::Finetune && a.init == OutputInit::Pca {
            bail!("--init is for project; finetune starts from the project model");
        }
        let kernels = kernels_for(a.kernels, a.device)?;
        let augment = a.augment.settings()?;
        let cfg = TwoDConfig {
            stage,
            images: a.images,
            from: a.from,
            out: a.out,
            epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            warmup: a.warmup.unwrap_or(0),
            weight_decay: a.weight_decay,
            seed: a.seed,
            out_dim: a.out_dim,
            loss: a.loss,
            threads,
            checkpoint_every: a.checkpoint_every,
            restart: a.restart,
            init: a.init,
            device: a.device,
            kernels,
            conv_math: a.conv_math,
            augment,
            map_scale: a.map_scale,
            freeze_layers: a.freeze_layers,
        };
        let summary = train_2d(&cfg, &TrainBar::new(cfg.batch_size))?;
        let last = summary.epochs.last().map_or(f64::NAN, |l| l.loss);
        eprintln!(
            "wrote {}: {} epochs on {} images, final loss {last:.4}",
            summary.out.display(),
            cfg.epochs,
            summary.images
        );
        Ok(())
    })
}
