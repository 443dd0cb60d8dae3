//! The flags of `project` and `finetune`: the same flags, with each
//! stage's recipe defaults set on the clap command (so `--help` shows them).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Command, CommandFactory, FromArgMatches, Parser};
use tsimcne_train::stage::{OutputInit, TwoDConfig, TwoDStage};

use crate::flags::train::{AugmentArgs, RunArgs, Schedule, TrainArgs, train_options};

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
    pub run: RunArgs,
    /// Project only: how the new output layer starts. `random`: the
    /// recipe's fresh layer; `pca`: the PCA of the pretrained 128-D outputs.
    #[arg(long, value_enum, default_value_t = OutputInit::Random)]
    init: OutputInit,
    #[command(flatten)]
    augment: AugmentArgs,
}

/// The command of one 2-D stage: [`TwoDArgs`] as its only arguments.
#[derive(Debug, Parser)]
pub struct Cli {
    #[command(flatten)]
    pub args: TwoDArgs,
}

/// The command of `stage`, with its recipe defaults.
pub fn command(stage: TwoDStage) -> Command {
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

impl TwoDArgs {
    /// The library's config of `stage`, checked.
    pub fn config(self, stage: TwoDStage) -> anyhow::Result<TwoDConfig> {
        if stage == TwoDStage::Finetune && self.init == OutputInit::Pca {
            bail!("--init is for project; finetune starts from the project model");
        }
        Ok(TwoDConfig {
            stage,
            images: self.images,
            from: self.from,
            out: self.out,
            out_dim: self.out_dim,
            init: self.init,
            map_scale: self.map_scale,
            freeze_layers: self.freeze_layers,
            train: train_options(self.schedule, &self.train, &self.run, &self.augment)?,
        })
    }
}

/// What a finetune's flags make of its views: the crop's lower bound, the
/// jitter probability and the frozen stages, read by `finetune`'s own
/// parser (so `estimate` times what the stage will run, with its defaults
/// and checks; flags finetune does not take are an error).
#[derive(Debug)]
pub struct FinetuneViews {
    pub crop_min: f64,
    pub jitter_p: f64,
    pub freeze_layers: usize,
}

/// [`FinetuneViews`] of `flags`, a finetune command line's flags without
/// its files.
pub fn finetune_views(flags: &[String]) -> anyhow::Result<FinetuneViews> {
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

#[cfg(test)]
mod tests {
    use super::finetune_views;

    #[test]
    fn reads_the_map_flags_with_finetunes_parser() {
        let flags: Vec<String> = [
            "--knn-positives",
            "10",
            "--knn-space",
            "joint",
            "--crop-min",
            "1",
            "--jitter-p=0",
        ]
        .map(String::from)
        .to_vec();
        let v = finetune_views(&flags).unwrap();
        assert_eq!((v.crop_min, v.jitter_p, v.freeze_layers), (1.0, 0.0, 0));
        let recipe = finetune_views(&[]).unwrap();
        assert_eq!((recipe.crop_min, recipe.jitter_p), (0.2, 0.8));
        let frozen = ["--freeze-layers", "2", "--freeze-layers", "3"].map(String::from);
        assert_eq!(finetune_views(&frozen).unwrap().freeze_layers, 3);
        for bad in [
            &["--crop-min", "x"][..],
            &["--crop-min", "2"],
            &["--no-such-flag"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let e = finetune_views(&bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
