//! The shared command line of `project` and `finetune`: the same flags, with
//! each stage's recipe defaults set on the clap command (so `--help` shows
//! them).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Command, CommandFactory, FromArgMatches, Parser};
use tsimcne_train::stage::{OutputInit, TwoDConfig, TwoDStage, train_2d};

use crate::train_args::{AugmentArgs, RunArgs, Schedule, TrainArgs, run_key, train_options};
use crate::{TrainBar, run_main, set_compute_threads};

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
    #[command(flatten)]
    schedule: Schedule,
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
    /// Dimension of the map: 2, or 3 for a 3-D map (project only; finetune keeps its input's).
    #[arg(long, default_value_t = 2)]
    out_dim: usize,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    run: RunArgs,
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
    let cmd = Cli::command()
        .name(stage.name())
        // A flag given again overrides the earlier one, so that a flag
        // appended to a preset's (make's FINETUNE_FLAGS=...) wins.
        .args_override_self(true)
        .about(about);
    Schedule::defaults(
        cmd,
        epochs,
        warmup,
        "the stage's recipe value, from the batch size",
    )
}

/// `main` of `project` and `finetune`: `argv` is the command line, the
/// stage's name first.
pub fn main(stage: TwoDStage, argv: Vec<OsString>) -> ExitCode {
    let cmd = command(stage);
    let matches = cmd.clone().get_matches_from(argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let a = cli.args;
    if a.run.print_key {
        print!("{}", run_key(&cmd, &matches));
        return ExitCode::SUCCESS;
    }
    set_compute_threads(a.run.threads());
    run_main(|| {
        if stage == TwoDStage::Finetune && a.init == OutputInit::Pca {
            bail!("--init is for project; finetune starts from the project model");
        }
        let schedule = a.schedule;
        let cfg = TwoDConfig {
            stage,
            images: a.images,
            from: a.from,
            out: a.out,
            out_dim: a.out_dim,
            init: a.init,
            map_scale: a.map_scale,
            freeze_layers: a.freeze_layers,
            train: train_options(schedule, &a.train, &a.run, &a.augment)?,
        };
        let summary = train_2d(&cfg, &TrainBar::new(cfg.train.batch_size))?;
        let last = summary.epochs.last().map_or(f64::NAN, |l| l.loss);
        eprintln!(
            "wrote {}: {} epochs on {} images, final loss {last:.4}",
            summary.out.display(),
            cfg.train.epochs,
            summary.images
        );
        Ok(())
    })
}

/// What a finetune's flags make of its views: the crop's lower bound, the
/// jitter probability and the frozen stages, read by `finetune`'s own
/// parser (so `estimate` times what the stage will run, with its defaults
/// and checks; flags finetune does not take are an error).
#[derive(Debug)]
pub(crate) struct FinetuneViews {
    pub crop_min: f64,
    pub jitter_p: f64,
    pub freeze_layers: usize,
}

/// [`FinetuneViews`] of `flags`, a finetune command line's flags without
/// its files.
pub(crate) fn finetune_views(flags: &[String]) -> anyhow::Result<FinetuneViews> {
    let files = ["finetune", "--images", "-", "--from", "-", "--out", "-"].map(OsString::from);
    let argv = files.into_iter().chain(flags.iter().map(OsString::from));
    let matches = command(TwoDStage::Finetune)
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    let a = match matches {
        Ok(cli) => cli.args,
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or(&text);
            bail!("finetune's flags: {}", first.trim_start_matches("error: "));
        }
    };
    let augment = a.augment.settings()?;
    Ok(FinetuneViews {
        crop_min: augment.crop_min,
        jitter_p: augment.jitter_p,
        freeze_layers: a.freeze_layers,
    })
}
