//! How long a pipeline's training will take on this machine, from a few
//! timed steps of each stage's kind on some of the run's images:
//! what `make` prints before a CPU run.
//!
//! Machines differ more than any formula can say (the same demo epochs ran
//! at 1,000 to 2,700 images/s on 2-core machines of this project, on
//! different days), so this measures instead of assuming: a training step
//! with the pretraining output, a step of the output layer alone (`project`)
//! and a full step with the map's output (`finetune`), each with its stage's
//! augmentation, which runs beside the network on the same cores.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tsimcne_augment::{AugmentConfig, Shape, two_views_of};
use tsimcne_format::ImageTableReader;
use tsimcne_format::model_keys::{HEAD, HEAD_OUT, ResNetArch};
use tsimcne_model::{Backprop, Model};

use crate::error::{Result, TrainError};
use crate::loss::{Contrastive, Similarity};
use crate::sgd::{Sgd, SgdConfig};

/// What a pipeline trains: the network, the images and each stage's epochs.
#[derive(Clone, Debug)]
pub struct EstimateConfig {
    /// The pretraining network (its output the pretraining's dimension).
    pub arch: ResNetArch,
    /// The map's dimension (the 2-D stages' output).
    pub map_dim: usize,
    pub shape: Shape,
    pub images: usize,
    /// Images per batch; each gives two views.
    pub batch_size: usize,
    pub pretrain_epochs: usize,
    pub project_epochs: usize,
    pub finetune_epochs: usize,
    /// The pretraining's augmentation.
    pub pretrain_augment: AugmentConfig,
    /// The 2-D stages' augmentation.
    pub map_augment: AugmentConfig,
    /// The finetune's `--freeze-layers` (0: everything trains).
    pub finetune_freeze_layers: usize,
    /// Threads for augmentation (the network uses candle's pool, which the
    /// caller sizes).
    pub threads: usize,
    /// Some of the run's images (u8 HWC, back to back, at least one), to
    /// time the steps on; used over again for a larger batch.
    pub sample: Vec<u8>,
}

/// Seconds of training per stage, and the step timings behind them.
#[derive(Clone, Debug)]
pub struct Estimate {
    pub pretrain_s: f64,
    pub project_s: f64,
    pub finetune_s: f64,
    /// Seconds per view of each kind of step, augmentation included.
    pub pretrain_view_s: f64,
    pub project_view_s: f64,
    pub finetune_view_s: f64,
    /// The pretraining's speed in images per second (two views each).
    pub pretrain_images_per_s: f64,
    /// Seconds the measurement took.
    pub measured_in_s: f64,
}

impl Estimate {
    pub fn total_s(&self) -> f64 {
        self.pretrain_s + self.project_s + self.finetune_s
    }

    /// The line `estimate` prints: `label` (e.g. the dataset), what was
    /// timed and what to expect.
    pub fn line(&self, label: &str, backbone: &str, cfg: &EstimateConfig) -> String {
        format!(
            "{label}: {}+{}+{} epochs of {} images, {backbone}, {} threads: expect about {} of \
             training ({} + {} + {}; pretraining at {:.0} images/s, timed here in {:.1} s)",
            cfg.pretrain_epochs,
            cfg.project_epochs,
            cfg.finetune_epochs,
            cfg.images,
            cfg.threads,
            duration(self.total_s()),
            duration(self.pretrain_s),
            duration(self.project_s),
            duration(self.finetune_s),
            self.pretrain_images_per_s,
            self.measured_in_s,
        )
    }
}

/// `42 s`, `13 min`, `2.5 h`, `3.1 days`.
pub fn duration(s: f64) -> String {
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

/// What an estimate needs of an image table: its size, its images' shape,
/// and the pixels of its first images to time the steps on.
#[derive(Clone, Debug)]
pub struct TableSample {
    pub images: usize,
    pub shape: Shape,
    /// At least `batch_size` images' pixels (whole row groups), or all.
    pub pixels: Vec<u8>,
}

impl TableSample {
    /// The table at `path` and its first `batch_size` images or more.
    pub fn read(path: &Path, batch_size: usize) -> Result<Self> {
        let mut table = ImageTableReader::open(path)?;
        let meta = table.meta().clone();
        let shape = Shape {
            height: meta.height as usize,
            width: meta.width as usize,
            channels: meta.channels as usize,
        };
        let images = table.num_rows();
        let mut pixels = Vec::new();
        while pixels.len() < batch_size.min(images) * shape.len() {
            match table.next() {
                Some(batch) => pixels.extend(batch?.pixels),
                None => break,
            }
        }
        Ok(Self {
            images,
            shape,
            pixels,
        })
    }
}

/// A timed step takes about this long (so a timer's resolution does not
/// matter), or is the full batch where that is faster.
const TARGET_STEP_S: f64 = 0.25;
/// Timed steps per kind (their median counts), after untimed warm-up steps
/// (the first steps of a model allocate its buffers and fault in their
/// pages: with 2 warm-up steps and the mean, the demo's estimate on a
/// 2-core Xeon came out 14 to 22 minutes for 12.2 of training; with 4 and
/// the median, 13 to 15).
const REPS: usize = 8;
const WARMUP: usize = 4;
/// Views of the step that sizes the timed ones.
const PROBE_VIEWS: usize = 16;

/// Times each kind of step on this machine and scales it by the epochs.
/// Takes about a second for the `small` network on 14×14 images, about half
/// a minute for ResNet18 on 32×32 ones.
pub fn estimate(cfg: &EstimateConfig) -> Result<Estimate> {
    if cfg.sample.is_empty() || !cfg.sample.len().is_multiple_of(cfg.shape.len()) {
        return Err(TrainError::Invalid(
            "the sample to time on needs at least one whole image".into(),
        ));
    }
    if cfg.batch_size < 2 || cfg.images < cfg.batch_size {
        return Err(TrainError::Invalid(format!(
            "a batch of {} from {} images: the batch needs at least 2 images and at most all",
            cfg.batch_size, cfg.images
        )));
    }
    let t0 = Instant::now();
    let device = Device::Cpu;
    let pretrain = Model::new(&cfg.arch, 0, &device)?;
    let map_arch = ResNetArch {
        out_dim: cfg.map_dim,
        ..cfg.arch.clone()
    };
    let map = Model::new(&map_arch, 0, &device)?;
    // A step of `v` views costs about `v` times a view's cost (measured on
    // the kernels: linear from a few dozen views up); a probe step sizes the
    // timed ones so that each takes about TARGET_STEP_S.
    let full = 2 * cfg.batch_size;
    let out_layer = format!("{HEAD}.{HEAD_OUT}");
    let mut kinds = [
        (pretrain, &cfg.pretrain_augment, Step::Full, None),
        (map, &cfg.map_augment, Step::OutputOnly, Some(out_layer)),
    ];
    let probe = PROBE_VIEWS.min(full);
    let per_view = Timer::new(cfg, probe).run(&mut kinds[0], 0, 1)?;
    let views = ((TARGET_STEP_S / per_view.max(1e-9)) as usize).clamp(probe, full) & !1;
    let timer = Timer::new(cfg, views);
    let pre = timer.run(&mut kinds[0], WARMUP, REPS)?;
    let proj = timer.run(&mut kinds[1], WARMUP, REPS)?;
    kinds[1].2 = match cfg.finetune_freeze_layers {
        0 => Step::Full,
        layers if layers > cfg.arch.widths.len() => {
            return Err(TrainError::Invalid(format!(
                "the backbone has {} stages; {layers} cannot be frozen",
                cfg.arch.widths.len()
            )));
        }
        layers => Step::Frozen {
            layers,
            blocks: cfg.arch.blocks_in(layers),
            // The trainer's PrefixCache: the frozen layers run once, not per step.
            cached: cfg.map_augment.flips_only(cfg.shape),
        },
    };
    kinds[1].3 = None;
    let fine = timer.run(&mut kinds[1], WARMUP, REPS)?;
    // Each epoch trains the whole batches only, two views an image.
    let views_per_epoch = (cfg.images / cfg.batch_size * full) as f64;
    Ok(Estimate {
        pretrain_s: pre * views_per_epoch * cfg.pretrain_epochs as f64,
        project_s: proj * views_per_epoch * cfg.project_epochs as f64,
        finetune_s: fine * views_per_epoch * cfg.finetune_epochs as f64,
        pretrain_view_s: pre,
        project_view_s: proj,
        finetune_view_s: fine,
        pretrain_images_per_s: 1.0 / (2.0 * pre),
        measured_in_s: t0.elapsed().as_secs_f64(),
    })
}

/// What a timed step trains.
#[derive(Clone, Copy, Debug)]
enum Step {
    Full,
    OutputOnly,
    /// The first `blocks` blocks frozen; `cached`: their output is made once
    /// per image and flip, so a step does not run them.
    Frozen {
        layers: usize,
        blocks: usize,
        cached: bool,
    },
}

/// One kind of step: the model, its augmentation, what it trains (and, for
/// the output layer alone, the parameters' prefix).
type Kind<'a> = (Model, &'a AugmentConfig, Step, Option<String>);

/// The sample's images, and steps on views made of them.
struct Timer<'a> {
    cfg: &'a EstimateConfig,
    views: usize,
    pixels: Vec<u8>,
}

impl<'a> Timer<'a> {
    fn new(cfg: &'a EstimateConfig, views: usize) -> Self {
        let len = views / 2 * cfg.shape.len();
        let pixels = cfg.sample.iter().copied().cycle().take(len).collect();
        Self { cfg, views, pixels }
    }

    /// The views of step `step`: two views of each image.
    fn augment(&self, augment: &AugmentConfig, step: u64) -> Vec<f32> {
        let shape = self.cfg.shape;
        let imgs: Vec<&[u8]> = self.pixels.chunks_exact(shape.len()).collect();
        let ids: Vec<u64> = (0..imgs.len() as u64).collect();
        let mut buf = vec![0f32; self.views * shape.len()];
        two_views_of(
            &imgs,
            &imgs,
            &ids,
            shape,
            augment,
            0,
            step,
            self.cfg.threads,
            &mut buf,
        );
        buf
    }

    /// Seconds per view of `steps` steps after `warmup` untimed ones, each
    /// batch's views made on another thread while the network trains on the
    /// one before, as the training loop does.
    fn run(&self, kind: &mut Kind<'_>, warmup: usize, steps: usize) -> Result<f64> {
        let (model, augment, step_kind, trainable) = kind;
        let step_kind = *step_kind;
        let augment: &AugmentConfig = augment;
        let prefixes = trainable.as_deref().map(|p| [p]);
        let frozen = match step_kind {
            Step::Frozen { layers, .. } => model.arch.frozen_prefixes(layers),
            _ => Vec::new(),
        };
        let mut sgd = Sgd::new(
            model
                .trainable(prefixes.as_ref().map(|p| &p[..]))
                .into_iter()
                .filter(|(name, _)| !frozen.iter().any(|p| name.starts_with(p.as_str())))
                .collect(),
            SgdConfig::default(),
        );
        let shape = self.cfg.shape;
        let dims = (self.views, shape.channels, shape.height, shape.width);
        std::thread::scope(|scope| -> Result<f64> {
            // With a cached prefix the trainer makes no views: each step's
            // are made first, outside the timed span, not beside it.
            let cached = matches!(step_kind, Step::Frozen { cached: true, .. });
            let depth = if cached { warmup + steps } else { 1 };
            let (tx, rx) = mpsc::sync_channel::<Vec<f32>>(depth);
            if cached {
                for step in 0..warmup + steps {
                    tx.send(self.augment(augment, step as u64))
                        .map_err(|_| TrainError::Invalid("views channel closed".into()))?;
                }
            } else {
                scope.spawn(move || {
                    for step in 0..warmup + steps {
                        if tx.send(self.augment(augment, step as u64)).is_err() {
                            return;
                        }
                    }
                });
            }
            let mut timed = Vec::with_capacity(steps);
            for step in 0..warmup + steps {
                let mut t0 = Instant::now();
                let buf = rx
                    .recv()
                    .map_err(|_| TrainError::Invalid("augmentation worker stopped".into()))?;
                let x = Tensor::from_vec(buf, dims, model.device())?;
                let loss = Contrastive::new(Similarity::Cauchy, None);
                let (_, grads) = match step_kind {
                    Step::Full => model.loss_and_grads(&x, Backprop::Full, &loss)?,
                    Step::OutputOnly => model.loss_and_grads(&x, Backprop::OutputOnly, &loss)?,
                    Step::Frozen {
                        blocks,
                        cached: false,
                        ..
                    } => model.loss_and_grads_frozen(&x, blocks, &loss)?,
                    Step::Frozen {
                        blocks,
                        cached: true,
                        ..
                    } => {
                        // The cache's rows, made outside the timed span.
                        let acts = model.frozen_prefix(&x, blocks)?;
                        t0 = Instant::now();
                        model.loss_and_grads_from(acts, blocks, &loss)?
                    }
                };
                // A tiny rate: the update's cost counts, the model is random.
                sgd.step(&grads, 1e-6)?;
                if step >= warmup {
                    timed.push(t0.elapsed().as_secs_f64());
                }
            }
            // The median step: a burst of other work on a shared machine
            // (or a cold first step) moves it less than the mean.
            timed.sort_by(f64::total_cmp);
            Ok(timed[timed.len() / 2] / self.views as f64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(9000.0), "2.5 h");
        assert_eq!(duration(259_200.0), "3.0 days");
    }
}
