//! `estimate`: how long a pipeline's training will take on this machine.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use tsimcne_augment::{AugmentConfig, Shape};
use tsimcne_format::ImageTableReader;
use tsimcne_model::preset::preset;
use tsimcne_train::estimate::{EstimateConfig, estimate};

use crate::{default_threads, run_main, set_compute_threads};

/// Prints how long a CPU run's training will take here: times a few
/// training steps of each stage's kind (pretraining; the output layer alone,
/// as `project`; everything in 2-D, as `finetune`), augmentation included,
/// on the table's first images, and scales them by the epochs.
/// About a second for the `small` network on small images.
#[derive(Debug, Parser)]
#[command(name = "estimate", version, about, long_about)]
struct Args {
    /// The image table (from prep): the number of images and their shape.
    #[arg(long)]
    images: PathBuf,
    /// Network preset: resnet18 (the paper's), small (CPU), tiny (tests).
    #[arg(long, default_value = "resnet18", value_parser = ["resnet18", "small", "tiny"])]
    backbone: String,
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
    label: String,
    /// The 2-D stages' flags, as passed to them (read by finetune's own
    /// parser, so they must be finetune's); their --crop-min and
    /// --jitter-p set the augmentation timed for project and finetune, and
    /// --freeze-layers the finetune's frozen stages; the others are ignored. Pretraining is timed with the recipe's
    /// augmentation.
    #[arg(last = true, allow_hyphen_values = true)]
    map_flags: Vec<String>,
}

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    set_compute_threads(threads);
    run_main(|| run(args, threads))
}

fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let &[pretrain_epochs, project_epochs, finetune_epochs] = &args.epochs[..] else {
        bail!("--epochs takes three numbers: pretrain,project,finetune");
    };
    let mut table = ImageTableReader::open(&args.images)?;
    let meta = table.meta().clone();
    let shape = Shape {
        height: meta.height as usize,
        width: meta.width as usize,
        channels: meta.channels as usize,
    };
    let arch = preset(&args.backbone, shape.channels, args.out_dim)?;
    let views = crate::two_d::finetune_views(&args.map_flags)?;
    let mut map_augment = AugmentConfig::default();
    map_augment.crop_scale.0 = views.crop_min;
    map_augment.jitter_p = views.jitter_p;
    let finetune_freeze_layers = views.freeze_layers;
    let images = table.num_rows();
    let batch_size = args.batch_size.min(images);
    // The first batch's images (a row group or more) to time the steps on.
    let mut sample = Vec::new();
    while sample.len() < batch_size * shape.len() {
        match table.next() {
            Some(batch) => sample.extend(batch?.pixels),
            None => break,
        }
    }
    let cfg = EstimateConfig {
        arch,
        map_dim: args.map_dim,
        shape,
        images,
        batch_size,
        pretrain_epochs,
        project_epochs,
        finetune_epochs,
        pretrain_augment: AugmentConfig::default(),
        map_augment,
        finetune_freeze_layers,
        threads,
        sample,
    };
    let e = estimate(&cfg)?;
    println!(
        "{}: {}+{}+{} epochs of {} images, {}, {threads} threads: expect about {} of training \
         ({} + {} + {}; pretraining at {:.0} images/s, timed here in {:.1} s)",
        args.label,
        pretrain_epochs,
        project_epochs,
        finetune_epochs,
        cfg.images,
        args.backbone,
        duration(e.total_s()),
        duration(e.pretrain_s),
        duration(e.project_s),
        duration(e.finetune_s),
        e.pretrain_images_per_s,
        e.measured_in_s,
    );
    Ok(())
}

/// `42 s`, `13 min`, `2.5 h`, `3.1 days`.
fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = crate::two_d::finetune_views(&flags).unwrap();
        assert_eq!((v.crop_min, v.jitter_p, v.freeze_layers), (1.0, 0.0, 0));
        let recipe = crate::two_d::finetune_views(&[]).unwrap();
        assert_eq!((recipe.crop_min, recipe.jitter_p), (0.2, 0.8));
        let frozen = ["--freeze-layers", "2", "--freeze-layers", "3"].map(String::from);
        assert_eq!(
            crate::two_d::finetune_views(&frozen).unwrap().freeze_layers,
            3
        );
        for bad in [
            &["--crop-min", "x"][..],
            &["--crop-min", "2"],
            &["--no-such-flag"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let e = crate::two_d::finetune_views(&bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(9000.0), "2.5 h");
        assert_eq!(duration(259_200.0), "3.0 days");
    }
}
