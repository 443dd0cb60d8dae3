//! The training loop shared by every stage: shuffled batches of two
//! augmented views, forward in training mode, InfoNCE, backward, SGD; a
//! checkpoint at the end of every `checkpoint_every` epochs; resume from it
//! ([`crate::checkpoint`]); partners from [`crate::positives`].
//!
//! **Invariant:** a run killed and restarted with the same settings and
//! thread count produces bit-identical weights: the checkpoint holds every
//! tensor that changes (weights, BatchNorm statistics and counter, momentum
//! buffers) and the epoch; everything random is keyed by (seed, epoch, …),
//! so there is no other generator state to restore.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::Tensor;
use tsimcne_augment::{AugmentConfig, Shape, pack_two_views, two_views_of, view_flip};
use tsimcne_format::ImageSet;
use tsimcne_format::atomic::write_bytes_atomic;
use tsimcne_model::{Acts, Backprop, Model};
use tsimcne_rng::SplitMix64;

use crate::checkpoint::{
    CHECKPOINT_FILE, EpochLog, FEATURE_NEIGHBOURS_KEY, LOG_FILE, csv, load_checkpoint, read_log,
    save_checkpoint,
};
use crate::error::{Result, TrainError};
use crate::loss::{Contrastive, Similarity};
use crate::positives::{Neighbours, Positives};
use crate::schedule::lr_schedule;
use crate::sgd::{GpuStep, Sgd, SgdConfig};

/// Key of the batch-order stream, beside the view streams' (seed, epoch, id, view).
const SHUFFLE_KEY: u64 = 0x5348_5546_464c_4500; // "SHUFFLE"

/// Training images in memory: u8 HWC, one after another.
#[derive(Debug)]
pub struct Images {
    pub shape: Shape,
    pub pixels: Vec<u8>,
    pub len: usize,
}

impl Images {
    pub fn from_set(set: ImageSet) -> Self {
        let shape = Shape {
            height: set.meta.height as usize,
            width: set.meta.width as usize,
            channels: set.meta.channels as usize,
        };
        Self {
            shape,
            len: set.len(),
            pixels: set.pixels,
        }
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Which forms of the GPU kernels a training stage uses (`--gpu-path`; a
/// variant's first paragraph is its `--help` line). Both give the same
/// results within float rounding; the CPU ignores the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GpuPath {
    /// The forms that passed the GPU tests on an H200.
    #[default]
    Tested,
    /// Also the newer ones, checked on the CPU but not yet run on a GPU:
    /// batch-norm sums over many blocks a channel, SGD in one kernel, the
    /// loss in our kernels, and augmentation on the GPU; with bf16,
    /// channels-last activations.
    ///
    /// `BnSums::Split`, `GpuStep::Fused`, `GpuLoss::Kernels`, and the image table in GPU memory
    /// with each batch's views made there (`GpuImages`) from parameters
    /// drawn on the CPU: the CPU augmentation's bits. With `--conv-math
    /// bf16`, `MemoryFormat::Nhwc` (see [`GpuPath::memory_format`]).
    Next,
}

impl GpuPath {
    /// How the backbone sums batch-norm statistics on this path.
    pub fn bn_sums(self) -> tsimcne_model::BnSums {
        match self {
            GpuPath::Tested => tsimcne_model::BnSums::PerChannel,
            GpuPath::Next => tsimcne_model::BnSums::Split,
        }
    }

    /// How the backbone lays out its activations on this path with `math`:
    /// channels-last for bf16 on the newer path, the layout of cuDNN's
    /// tensor-core convolutions (PyTorch's advice for bf16), else NCHW.
    /// `bench_train`'s `-nhwc` forms measure both layouts in every math.
    pub fn memory_format(self, math: tsimcne_model::ConvMath) -> tsimcne_model::MemoryFormat {
        match (self, math) {
            (GpuPath::Next, tsimcne_model::ConvMath::Bf16) => tsimcne_model::MemoryFormat::Nhwc,
            _ => tsimcne_model::MemoryFormat::Nchw,
        }
    }

    /// How the loss is computed on this path.
    pub fn loss(self) -> tsimcne_model::GpuLoss {
        match self {
            GpuPath::Tested => tsimcne_model::GpuLoss::Graph,
            GpuPath::Next => tsimcne_model::GpuLoss::Kernels,
        }
    }

    /// How SGD updates parameters on this path.
    pub fn sgd_step(self) -> GpuStep {
        match self {
            GpuPath::Tested => GpuStep::TensorOps,
            GpuPath::Next => GpuStep::Fused,
        }
    }
}

/// The image table in GPU memory, in the `cuda` build.
#[cfg(feature = "cuda")]
type GpuImages = tsimcne_model::cuda::GpuImages;

/// Without the `cuda` build there is never a table in GPU memory.
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
enum GpuImages {}

#[cfg(not(feature = "cuda"))]
impl GpuImages {
    fn views(&self, _: &[i32], _: &[f32], _: &AugmentConfig) -> Result<Tensor> {
        match *self {}
    }
}

/// Everything the loop needs; the stage resolves it from its config.
#[derive(Clone, Debug)]
pub struct Settings {
    pub epochs: usize,
    /// Images per batch; each gives two views.
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    pub similarity: Similarity,
    pub sgd: SgdConfig,
    pub augment: AugmentConfig,
    /// Threads for augmentation (the network uses candle's own pool).
    pub threads: usize,
    pub checkpoint_every: usize,
    /// Train only parameters whose name starts with one of these.
    pub trainable: Option<Vec<String>>,
    /// Stored in the checkpoint; a checkpoint with another is not resumed.
    pub fingerprint: String,
    /// Where the second views come from; the default is the recipe's (both
    /// views of the same image).
    pub positives: Positives,
    /// The loss sees each batch's output at this fixed spread
    /// ([`crate::loss::fixed_scale`]); `None`: as it is (the recipe).
    pub map_scale: Option<f64>,
    /// The stem and the first `freeze_layers` stages are fixed: eval-mode
    /// BatchNorm, no gradients, no updates (0: everything trains).
    pub freeze_layers: usize,
    /// On a GPU: which forms of our kernels and where the augmentation runs.
    pub gpu_path: GpuPath,
}

/// The most bytes [`PrefixCache`] may take; above it the frozen layers run
/// on every batch instead.
pub const PREFIX_CACHE_MAX_BYTES: usize = 3 << 30;

/// The frozen layers' output for every image and its mirror image, computed
/// once when the views are nothing but those two ([`AugmentConfig::flips_only`]):
/// the epochs then run only the layers that train.
struct PrefixCache {
    /// `[n · 2, h, w, c]`: image `i` plain at row `2i`, mirrored at `2i + 1`.
    data: Vec<f32>,
    /// The frozen blocks whose output this is.
    blocks: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl PrefixCache {
    /// Images per forward pass while filling the cache.
    const CHUNK: usize = 256;

    fn row_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// The cache of `model`'s first `blocks` blocks, or `None` when it would
    /// exceed [`PREFIX_CACHE_MAX_BYTES`].
    fn build(
        model: &Model,
        images: &Images,
        aug: &AugmentConfig,
        blocks: usize,
    ) -> Result<Option<Self>> {
        let shape = images.shape;
        let n = images.len;
        let view_len = shape.len();
        let mut cache: Option<Self> = None;
        for start in (0..n).step_by(Self::CHUNK) {
            let m = Self::CHUNK.min(n - start);
            // [m · 2, c, h, w]: each image, then its mirror image.
            let mut views = vec![0f32; 2 * m * view_len];
            for (k, pair) in views.chunks_exact_mut(2 * view_len).enumerate() {
                let (plain, mirror) = pair.split_at_mut(view_len);
                tsimcne_augment::plain(images.image(start + k), shape, aug, plain);
                mirror.copy_from_slice(plain);
                for row in mirror.chunks_exact_mut(shape.width) {
                    row.reverse();
                }
            }
            let x = Tensor::from_vec(
                views,
                (2 * m, shape.channels, shape.height, shape.width),
                model.device(),
            )?;
            let acts = model.frozen_prefix(&x, blocks)?;
            let c = cache.get_or_insert_with(|| Self {
                data: Vec::new(),
                blocks,
                h: acts.h,
                w: acts.w,
                c: acts.c,
            });
            if start == 0 {
                let bytes = 4 * 2 * n * c.row_len();
                if bytes > PREFIX_CACHE_MAX_BYTES {
                    return Ok(None);
                }
                c.data.reserve_exact(2 * n * c.row_len());
            }
            c.data.extend_from_slice(&acts.data);
        }
        Ok(cache)
    }

    /// Row `2 · image + flip` of the cache.
    fn row(&self, image: usize, flip: bool) -> &[f32] {
        let len = self.row_len();
        let r = 2 * image + usize::from(flip);
        &self.data[r * len..(r + 1) * len]
    }
}

/// What the augmentation worker hands the training loop.
enum Batch {
    /// Views `[2 · batch, c, h, w]`.
    Views(Vec<f32>),
    /// The views' packed parameters, for [`GpuImages::views`].
    Packed { ints: Vec<i32>, floats: Vec<f32> },
    /// The output of the frozen first `first` blocks for those views, from
    /// the [`PrefixCache`].
    Cached { acts: Acts, first: usize },
}

/// Receives progress; the binary draws it.
pub trait Observer {
    fn start(&self, total_steps: u64, done_steps: u64);
    fn step(&self, epoch: usize, loss: f32);
    fn epoch(&self, log: &EpochLog);
    fn finish(&self);
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn start(&self, _: u64, _: u64) {}
    fn step(&self, _: usize, _: f32) {}
    fn epoch(&self, _: &EpochLog) {}
    fn finish(&self) {}
}

/// The images of epoch `epoch` in batch order: a seeded Fisher–Yates shuffle.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::keyed(&[seed, SHUFFLE_KEY, epoch as u64]);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// Trains `model` on `images` per `s`, checkpointing into `dir`. Resumes
/// from `dir`'s checkpoint if there is one (with the same fingerprint).
/// Returns the per-epoch log (earlier epochs included on resume).
pub fn train(
    model: &mut Model,
    images: &Images,
    s: &Settings,
    dir: &Path,
    obs: &dyn Observer,
) -> Result<Vec<EpochLog>> {
    let n = images.len;
    if s.batch_size < 2 {
        return Err(TrainError::Invalid(format!(
            "a batch needs at least 2 images, not {}",
            s.batch_size
        )));
    }
    if s.batch_size > n {
        return Err(TrainError::Invalid(format!(
            "the batch size {} is larger than the {n} images",
            s.batch_size
        )));
    }
    let steps = n / s.batch_size; // the last partial batch is dropped
    let lrs = lr_schedule(s.lr, s.epochs, s.warmup);
    let prefixes: Option<Vec<&str>> = s
        .trainable
        .as_ref()
        .map(|p| p.iter().map(String::as_str).collect());
    let stages = model.arch.widths.len();
    if s.freeze_layers > stages {
        return Err(TrainError::Invalid(format!(
            "the backbone has {stages} stages; {} cannot be frozen",
            s.freeze_layers
        )));
    }
    let frozen = model.arch.frozen_prefixes(s.freeze_layers);
    let frozen_blocks = (s.freeze_layers > 0).then(|| model.arch.blocks_in(s.freeze_layers));
    let mut sgd = Sgd::new(
        model
            .trainable(prefixes.as_deref())
            .into_iter()
            .filter(|(name, _)| !frozen.iter().any(|p| name.starts_with(p.as_str())))
            .collect(),
        s.sgd,
    );
    sgd.set_gpu_step(s.gpu_path.sgd_step());
    // Training the output layer alone (the project stage): nothing below it
    // needs a gradient, so the graph is cut there. Same values, same updates.
    let out_layer = format!(
        "{}.{}",
        tsimcne_format::model_keys::HEAD,
        tsimcne_format::model_keys::HEAD_OUT
    );
    let output_only = prefixes.as_deref() == Some(&[out_layer.as_str()][..]);
    let ckpt: PathBuf = dir.join(CHECKPOINT_FILE);
    let (start, mut feature_list) = if ckpt.exists() {
        load_checkpoint(&ckpt, model, &mut sgd, &s.fingerprint)?
    } else {
        (0, None)
    };
    if let Some(nb) = &feature_list
        && (nb.idx.len() != n * nb.k || nb.idx.iter().any(|&j| j as usize >= n))
    {
        return Err(TrainError::Checkpoint {
            path: ckpt.clone(),
            detail: format!("{FEATURE_NEIGHBOURS_KEY} does not fit the {n} images"),
        });
    }
    // Frozen layers whose input is fixed up to a mirror: their output once
    // per image and flip (recomputed on resume, from the same weights).
    let cache = match frozen_blocks {
        Some(blocks)
            if start < s.epochs
                && s.augment.flips_only(images.shape)
                && model.kernels() == tsimcne_model::Kernels::Fast
                && model.device().is_cpu() =>
        {
            PrefixCache::build(model, images, &s.augment, blocks)?
        }
        _ => None,
    };
    // The views made on the GPU, from the table in its memory.
    let gpu_images: Option<GpuImages> = match () {
        #[cfg(feature = "cuda")]
        () if s.gpu_path == GpuPath::Next
            && model.device().is_cuda()
            && cache.is_none()
            && start < s.epochs =>
        {
            Some(GpuImages::upload(
                model.device(),
                &images.pixels,
                images.shape,
            )?)
        }
        () => None,
    };
    let mut logs = read_log(&dir.join(LOG_FILE), start);
    obs.start((s.epochs * steps) as u64, (start * steps) as u64);
    let shape = images.shape;
    let view_len = shape.len();
    let dims = (2 * s.batch_size, shape.channels, shape.height, shape.width);
    // The lists partners are drawn from; rebuilt only when the feature list
    // changes (the lists are shared, so a copy is a reference count).
    let mut partners: Option<Option<Neighbours>> = None;
    let objective = Contrastive::new(s.similarity, s.map_scale);
    // The loss and gradients of a batch of views [2 · batch, c, h, w].
    let views_loss = |model: &mut Model, x: &Tensor| -> Result<_> {
        Ok(match frozen_blocks {
            Some(blocks) => model.loss_and_grads_frozen(x, blocks, &objective)?,
            None if output_only => model.loss_and_grads(x, Backprop::OutputOnly, &objective)?,
            None => model.loss_and_grads(x, Backprop::Full, &objective)?,
        })
    };
    for (epoch, &lr) in lrs.iter().enumerate().skip(start) {
        let t0 = Instant::now();
        if let Some(f) = &s.positives.features {
            // Due now, or in use but lost (a checkpoint written before it).
            if f.due(epoch) || (f.active(epoch) && feature_list.is_none()) {
                feature_list = Some(f.compute(model, images, s.threads)?);
                partners = None;
            }
        }
        let partners =
            &*partners.get_or_insert_with(|| match (&s.positives.fixed, &feature_list) {
                (None, None) => None,
                (Some(a), None) => Some(a.clone()),
                (None, Some(b)) => Some(b.clone()),
                (Some(a), Some(b)) => Some(Neighbours::union(a, b)),
            });
        let order = epoch_order(n, s.seed, epoch);
        let mut loss_sum = 0.0;
        // Augment the next batch on worker threads while this one trains.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::sync_channel::<Batch>(1);
            let order = &order;
            let cache = cache.as_ref();
            let packed = gpu_images.is_some();
            scope.spawn(move || {
                for step in 0..steps {
                    let idx = &order[step * s.batch_size..(step + 1) * s.batch_size];
                    if let Some(c) = cache {
                        // The rows two_views_of's views would give: view 0 of
                        // image i, view 1 of its partner, both flipped as i's
                        // streams say.
                        let len = c.row_len();
                        let mut data = vec![0f32; 2 * s.batch_size * len];
                        let (first, second) = data.split_at_mut(s.batch_size * len);
                        for (k, &i) in idx.iter().enumerate() {
                            let p = partners
                                .as_ref()
                                .map_or(i, |nb| nb.partner(i, s.seed, epoch));
                            let flip = |view| {
                                view_flip(s.seed, epoch as u64, i as u64, view, shape, &s.augment)
                            };
                            first[k * len..(k + 1) * len].copy_from_slice(c.row(i, flip(0)));
                            second[k * len..(k + 1) * len].copy_from_slice(c.row(p, flip(1)));
                        }
                        let acts = Acts {
                            data,
                            n: 2 * s.batch_size,
                            h: c.h,
                            w: c.w,
                            c: c.c,
                        };
                        if tx
                            .send(Batch::Cached {
                                acts,
                                first: c.blocks,
                            })
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
                    // Second views come from each image's partner, or the image.
                    let second: Vec<usize> = match partners {
                        None => idx.to_vec(),
                        Some(nb) => idx.iter().map(|&i| nb.partner(i, s.seed, epoch)).collect(),
                    };
                    let (seed, epoch) = (s.seed, epoch as u64);
                    let batch = if packed {
                        let (ints, floats) =
                            pack_two_views(idx, &second, &ids, shape, &s.augment, seed, epoch);
                        Batch::Packed { ints, floats }
                    } else {
                        let rows = |r: &[usize]| r.iter().map(|&i| images.image(i)).collect();
                        let (first, second): (Vec<&[u8]>, Vec<&[u8]>) = (rows(idx), rows(&second));
                        let mut buf = vec![0f32; 2 * s.batch_size * view_len];
                        two_views_of(
                            &first, &second, &ids, shape, &s.augment, seed, epoch, s.threads,
                            &mut buf,
                        );
                        Batch::Views(buf)
                    };
                    if tx.send(batch).is_err() {
                        return; // the trainer stopped early
                    }
                }
            });
            for step in 0..steps {
                let batch = rx
                    .recv()
                    .map_err(|_| TrainError::Invalid("augmentation worker stopped".into()))?;
                let (loss, grads) = match batch {
                    Batch::Cached { acts, first } => {
                        model.loss_and_grads_from(acts, first, &objective)?
                    }
                    Batch::Views(buf) => {
                        views_loss(model, &Tensor::from_vec(buf, dims, model.device())?)?
                    }
                    Batch::Packed { ints, floats } => {
                        let table = gpu_images
                            .as_ref()
                            .ok_or_else(|| TrainError::Invalid("no images on the GPU".into()))?;
                        views_loss(model, &table.views(&ints, &floats, &s.augment)?)?
                    }
                };
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(TrainError::Diverged {
                        at: format!("epoch {}, step {}", epoch + 1, step + 1),
                        what: format!("the loss is {value}"),
                    });
                }
                sgd.step(&grads, lr)?;
                loss_sum += f64::from(value);
                obs.step(epoch + 1, value);
            }
            Ok(())
        })?;
        let seconds = t0.elapsed().as_secs_f64();
        let log = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / steps as f64,
            lr,
            seconds,
            images_per_s: (steps * s.batch_size) as f64 / seconds.max(1e-9),
        };
        // Every epoch, not only those that checkpoint: a divergence stops
        // the run in the epoch it happened, before anything is written.
        check_finite(model, epoch + 1, steps)?;
        obs.epoch(&log);
        logs.push(log);
        let last = epoch + 1 == s.epochs;
        if last || (epoch + 1) % s.checkpoint_every.max(1) == 0 {
            // The log first: it may run ahead of the checkpoint (a resume
            // keeps only the rows up to the checkpoint's epoch), never behind.
            write_bytes_atomic(&dir.join(LOG_FILE), csv(&logs).as_bytes())?;
            save_checkpoint(
                &ckpt,
                model,
                &sgd,
                epoch + 1,
                &s.fingerprint,
                feature_list.as_ref(),
            )?;
        }
    }
    obs.finish();
    Ok(logs)
}

/// Stops on weights that hold NaN or infinity (which the loss may not show:
/// a ReLU turns NaN into 0): checked after the last step of every epoch
/// (1-based `epoch`, `step`), so before any checkpoint, with one transfer
/// from the device. The first tensor by name is reported.
fn check_finite(model: &Model, epoch: usize, step: usize) -> Result<()> {
    let mut vars: Vec<(String, candle_core::Var)> = model.vars().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let sums = vars
        .iter()
        .map(|(_, v)| v.as_tensor().sum_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    if sums.is_empty() {
        return Ok(());
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    if let Some(((name, _), _)) = vars.iter().zip(&sums).find(|(_, s)| !s.is_finite()) {
        return Err(TrainError::Diverged {
            at: format!("epoch {epoch}, step {step}"),
            what: format!("{name} is not finite (weights are checked at the end of each epoch)"),
        });
    }
    Ok(())
}

/// Embeds every image without augmentation, BatchNorm in eval mode:
/// returns (backbone features `[N, feature]`, head outputs `[N, out_dim]`),
/// row-major.
pub fn embed_all(
    model: &Model,
    images: &Images,
    augment: &AugmentConfig,
    batch: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let shape = images.shape;
    let (mut feats, mut outs) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < images.len {
        let end = (start + batch.max(1)).min(images.len);
        let mut buf = vec![0f32; (end - start) * shape.len()];
        for (k, slot) in buf.chunks_exact_mut(shape.len()).enumerate() {
            tsimcne_augment::plain(images.image(start + k), shape, augment, slot);
        }
        let x = Tensor::from_vec(
            buf,
            (end - start, shape.channels, shape.height, shape.width),
            model.device(),
        )?;
        let (f, z) = model.infer(&x)?;
        feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
        outs.extend(z.flatten_all()?.to_vec1::<f32>()?);
        start = end;
    }
    Ok((feats, outs))
}
