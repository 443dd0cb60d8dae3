//! The training loop shared by every stage: shuffled batches of two
//! augmented views, forward in training mode, InfoNCE, backward, SGD; a
//! checkpoint at the end of every `checkpoint_every` epochs; resume from it.
//!
//! **Invariant:** a run killed and restarted with the same settings and
//! thread count produces bit-identical weights: the checkpoint holds every
//! tensor that changes (weights, BatchNorm statistics and counter, momentum
//! buffers) and the epoch; everything random is keyed by (seed, epoch, …),
//! so there is no other generator state to restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tsimcne_augment::{AugmentConfig, Shape, two_views_of, view_flip};
use tsimcne_format::ImageSet;
use tsimcne_format::atomic::write_bytes_atomic;
use tsimcne_model::{Acts, Backprop, Model};
use tsimcne_rng::SplitMix64;

use crate::error::{Result, TrainError};
use crate::loss::{Contrastive, Similarity};
use crate::schedule::lr_schedule;
use crate::sgd::{Sgd, SgdConfig};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOG_FILE: &str = "log.csv";
const MOMENTUM_PREFIX: &str = "momentum.";
/// Key of the batch-order stream, beside the view streams' (seed, epoch, id, view).
const SHUFFLE_KEY: u64 = 0x5348_5546_464c_4500; // "SHUFFLE"
/// Key of the partner streams of [`Neighbours`].
const PARTNER_KEY: u64 = 0x5041_5254_4e45_5200; // "PARTNER"

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

/// Positive partners other than the image itself (opt-in, not the recipe):
/// in epoch `e` the second view of image `i` is made from one of its `k`
/// listed neighbours, drawn uniformly from the stream keyed by
/// (seed, "PARTNER", e, i), so the choice does not depend on the batch or
/// the thread count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbours {
    pub k: usize,
    /// `k` image indices per image, row after row.
    pub idx: std::sync::Arc<Vec<u32>>,
}

impl Neighbours {
    /// The exact `k` nearest images of every image in pixel space
    /// (Euclidean on the u8 pixels, the image itself left out; ties by
    /// index), on `threads` threads (the result does not depend on them).
    ///
    /// # Panics
    /// If `k` is 0 or not below the number of images.
    pub fn in_pixels(images: &Images, k: usize, threads: usize) -> Self {
        let all: Vec<u32> = (0..images.len as u32).collect();
        let data = tsimcne_eval::Data::U8 {
            dim: images.shape.len(),
            values: &images.pixels,
        };
        let idx = tsimcne_eval::knn::k_nearest(data, &all, &all, k, threads);
        Self {
            k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// The exact `k` nearest rows of `values` (`dim` floats a row,
    /// Euclidean, the row itself left out; ties by index).
    pub fn in_features(values: &[f32], dim: usize, k: usize, threads: usize) -> Self {
        let n = values.len() / dim;
        let all: Vec<u32> = (0..n as u32).collect();
        let data = tsimcne_eval::Data::F32 { dim, values };
        let idx = tsimcne_eval::knn::k_nearest(data, &all, &all, k, threads);
        Self {
            k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// Both lists of every image, `a`'s then `b`'s (a neighbour in both is
    /// listed twice, so drawn twice as often).
    pub fn union(a: &Neighbours, b: &Neighbours) -> Self {
        let n = a.idx.len() / a.k;
        assert_eq!(n, b.idx.len() / b.k, "neighbour lists of different sizes");
        let mut idx = Vec::with_capacity(n * (a.k + b.k));
        for i in 0..n {
            idx.extend_from_slice(&a.idx[i * a.k..(i + 1) * a.k]);
            idx.extend_from_slice(&b.idx[i * b.k..(i + 1) * b.k]);
        }
        Self {
            k: a.k + b.k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// The partner of image `i` in `epoch`.
    pub fn partner(&self, i: usize, seed: u64, epoch: usize) -> usize {
        let mut rng = SplitMix64::keyed(&[seed, PARTNER_KEY, epoch as u64, i as u64]);
        self.idx[i * self.k + rng.below(self.k)] as usize
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
    /// The output of the frozen first `first` blocks for those views, from
    /// the [`PrefixCache`].
    Cached { acts: Acts, first: usize },
}

/// Where each image's second view comes from (opt-in, not the recipe):
/// one of its listed neighbours, drawn per epoch by [`Neighbours::partner`]
/// from the union of the fixed list and the feature-space list in use.
/// With neither, the second view is of the image itself (the recipe).
#[derive(Clone, Debug, Default)]
pub struct Positives {
    /// A fixed list, e.g. the pixel-space neighbours.
    pub fixed: Option<Neighbours>,
    /// Neighbours in the backbone features of the model being trained.
    pub features: Option<FeatureNeighbours>,
}

/// The `k` nearest images in the backbone features (eval mode, no
/// augmentation) of the model being trained, recomputed as it learns.
#[derive(Clone, Debug)]
pub struct FeatureNeighbours {
    pub k: usize,
    /// Recompute at the start of every `refresh`-th epoch; 0: never again.
    pub refresh: usize,
    /// Compute them before the first epoch (the model is trained already,
    /// as in the 2-D stages); otherwise the first list is made at epoch
    /// `refresh`, and until then only the fixed list (or the image itself)
    /// gives partners.
    pub at_start: bool,
    /// Neighbours in the joint space (`--knn-space joint`): by the mean of
    /// the pixel and the feature cosine similarities, see [`joint_rows`].
    pub joint: bool,
    /// The input preparation of the embedding pass (normalisation only).
    pub plain: AugmentConfig,
}

impl FeatureNeighbours {
    /// Whether epoch `epoch` (0-based) starts by recomputing the list.
    fn due(&self, epoch: usize) -> bool {
        (self.at_start && epoch == 0)
            || (self.refresh > 0 && epoch > 0 && epoch.is_multiple_of(self.refresh))
    }

    /// Whether a list is in use in epoch `epoch`.
    fn active(&self, epoch: usize) -> bool {
        self.at_start || (self.refresh > 0 && epoch >= self.refresh)
    }

    /// The list of `model`'s current features.
    pub fn compute(&self, model: &Model, images: &Images, threads: usize) -> Result<Neighbours> {
        let (f, _) = embed_all(model, images, &self.plain, 256)?;
        let dim = f.len() / images.len.max(1);
        if self.joint {
            let (rows, dim) = joint_rows(&images.pixels, images.shape.len(), &f, dim);
            return Ok(Neighbours::in_features(&rows, dim, self.k, threads));
        }
        Ok(Neighbours::in_features(&f, dim, self.k, threads))
    }
}

/// Rows whose Euclidean neighbours are the neighbours by the mean of the
/// two cosine similarities: each row is `[p̂, f̂]`, where `p̂` is the image's
/// pixels minus the table's mean pixels, scaled to unit length, and `f̂` the
/// same for its features. Since `‖[p̂, f̂] − [p̂', f̂']‖² = 4 − 2(cos_p + cos_f)`,
/// both spaces count equally whatever their scales. A row that equals the
/// mean stays zero. Returns the rows and their length.
///
/// Means are summed in f64 in row order, so the result does not depend on
/// threads.
pub fn joint_rows(pixels: &[u8], pdim: usize, features: &[f32], fdim: usize) -> (Vec<f32>, usize) {
    let n = features.len() / fdim.max(1);
    assert_eq!(
        pixels.len(),
        n * pdim,
        "pixel and feature rows differ in number"
    );
    let dim = pdim + fdim;
    let mut out = vec![0f32; n * dim];
    put_centred_unit(pixels, pdim, &mut out, dim, 0);
    put_centred_unit(features, fdim, &mut out, dim, pdim);
    (out, dim)
}

/// Writes each `d`-long row of `values`, minus the column means and scaled
/// to unit length (zero when it equals the mean), into columns
/// `offset..offset + d` of the `dim`-long rows of `out`.
fn put_centred_unit<T: Copy + Into<f64>>(
    values: &[T],
    d: usize,
    out: &mut [f32],
    dim: usize,
    offset: usize,
) {
    let n = values.len() / d.max(1);
    let mut mean = vec![0f64; d];
    for row in values.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v.into();
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut centred = vec![0f64; d];
    for (row, o) in values.chunks_exact(d).zip(out.chunks_exact_mut(dim)) {
        for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = v.into() - m;
        }
        let norm = centred.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for (o, c) in o[offset..offset + d].iter_mut().zip(&centred) {
            *o = (c * scale) as f32;
        }
    }
}

/// Checkpoint key of the feature-space neighbour list in use.
const FEATURE_NEIGHBOURS_KEY: &str = "positives.features";

/// One row of `log.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
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

fn csv(logs: &[EpochLog]) -> String {
    let mut s = String::from("epoch,loss,lr,seconds,images_per_s\n");
    for l in logs {
        s.push_str(&format!(
            "{},{:.6},{:.8},{:.3},{:.1}\n",
            l.epoch, l.loss, l.lr, l.seconds, l.images_per_s
        ));
    }
    s
}

/// Reads back the rows of an earlier `log.csv` (to keep them on resume).
fn read_log(path: &Path, up_to: usize) -> Vec<EpochLog> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<f64> = line
                .split(',')
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() == 5).then(|| EpochLog {
                epoch: f[0] as usize,
                loss: f[1],
                lr: f[2],
                seconds: f[3],
                images_per_s: f[4],
            })
        })
        .filter(|l| l.epoch <= up_to)
        .collect()
}

/// The state saved at a checkpoint: the model's tensors under the reference
/// names, `momentum.<name>` buffers, and the epoch and fingerprint in the
/// safetensors metadata. One file, so the parts can never disagree.
fn save_checkpoint(
    path: &Path,
    model: &Model,
    sgd: &Sgd,
    epochs_done: usize,
    fingerprint: &str,
    features: Option<&Neighbours>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = model.state()?;
    if let Some(nb) = features {
        let n = nb.idx.len() / nb.k;
        tensors.push((
            FEATURE_NEIGHBOURS_KEY.to_string(),
            Tensor::from_slice(&nb.idx[..], (n, nb.k), &Device::Cpu)?,
        ));
    }
    for (name, buf) in sgd.buffers() {
        tensors.push((
            format!("{MOMENTUM_PREFIX}{name}"),
            buf.to_device(&Device::Cpu)?,
        ));
    }
    // One metadata entry: safetensors writes its metadata map in hash
    // order, and the checkpoint's bytes must not depend on it.
    let state =
        serde_json::json!({ "epochs_done": epochs_done, "fingerprint": fingerprint }).to_string();
    let meta = std::collections::HashMap::from([(CHECKPOINT_META.to_string(), state)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| TrainError::Checkpoint {
            path: path.into(),
            detail: e.to_string(),
        })?;
    write_bytes_atomic(path, &bytes)?;
    Ok(())
}

const CHECKPOINT_META: &str = "tsimcne.checkpoint";

/// (epochs done, fingerprint) from the checkpoint metadata entry.
fn parse_state(json: &str) -> (Option<usize>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct State {
        epochs_done: usize,
        fingerprint: String,
    }
    match serde_json::from_str::<State>(json) {
        Ok(s) => (Some(s.epochs_done), Some(s.fingerprint)),
        Err(_) => (None, None),
    }
}

/// Restores a checkpoint into `model` and `sgd`; returns the epochs done
/// and the feature-space neighbour list in use, if it holds one.
fn load_checkpoint(
    path: &Path,
    model: &mut Model,
    sgd: &mut Sgd,
    fingerprint: &str,
) -> Result<(usize, Option<Neighbours>)> {
    let bad = |detail: String| TrainError::Checkpoint {
        path: path.into(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let state = meta
        .get(CHECKPOINT_META)
        .map(|m| parse_state(m))
        .unwrap_or_default();
    if state.1.as_deref() != Some(fingerprint) {
        return Err(bad(
            "the checkpoint was made with other settings; rerun with the same settings to resume, or pass --restart to start over"
                .into(),
        ));
    }
    let done = state
        .0
        .ok_or_else(|| bad("checkpoint has no epoch".into()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
    model.assign(path, &st, &[MOMENTUM_PREFIX, FEATURE_NEIGHBOURS_KEY])?;
    let features = match st.tensor(FEATURE_NEIGHBOURS_KEY) {
        Err(_) => None,
        Ok(view) => {
            let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?;
            let (_, k) = t
                .dims2()
                .map_err(|_| bad(format!("{FEATURE_NEIGHBOURS_KEY} is not a matrix")))?;
            let idx = t
                .flatten_all()?
                .to_vec1::<u32>()
                .map_err(|_| bad(format!("{FEATURE_NEIGHBOURS_KEY} is not u32")))?;
            if k == 0 {
                return Err(bad(format!("{FEATURE_NEIGHBOURS_KEY} is empty")));
            }
            Some(Neighbours {
                k,
                idx: std::sync::Arc::new(idx),
            })
        }
    };
    let mut buffers = BTreeMap::new();
    for name in st.names() {
        if let Some(param) = name.strip_prefix(MOMENTUM_PREFIX) {
            let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?
                .to_device(model.device())?;
            buffers.insert(param.to_string(), t);
        }
    }
    sgd.set_buffers(buffers)?;
    Ok((done, features))
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
    let mut logs = read_log(&dir.join(LOG_FILE), start);
    obs.start((s.epochs * steps) as u64, (start * steps) as u64);
    let shape = images.shape;
    let view_len = shape.len();
    let dims = (2 * s.batch_size, shape.channels, shape.height, shape.width);
    // The lists partners are drawn from; rebuilt only when the feature list
    // changes (the lists are shared, so a copy is a reference count).
    let mut partners: Option<Option<Neighbours>> = None;
    let objective = Contrastive::new(s.similarity, s.map_scale);
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
                    let imgs: Vec<&[u8]> = idx.iter().map(|&i| images.image(i)).collect();
                    let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
                    let second: Vec<&[u8]> = match partners {
                        None => imgs.clone(),
                        Some(nb) => idx
                            .iter()
                            .map(|&i| images.image(nb.partner(i, s.seed, epoch)))
                            .collect(),
                    };
                    let mut buf = vec![0f32; 2 * s.batch_size * view_len];
                    two_views_of(
                        &imgs,
                        &second,
                        &ids,
                        shape,
                        &s.augment,
                        s.seed,
                        epoch as u64,
                        s.threads,
                        &mut buf,
                    );
                    if tx.send(Batch::Views(buf)).is_err() {
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
                        let x = Tensor::from_vec(buf, dims, model.device())?;
                        match frozen_blocks {
                            Some(blocks) => model.loss_and_grads_frozen(&x, blocks, &objective)?,
                            None if output_only => {
                                model.loss_and_grads(&x, Backprop::OutputOnly, &objective)?
                            }
                            None => model.loss_and_grads(&x, Backprop::Full, &objective)?,
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Images on a line (image `i` is `i·10` everywhere): the pixel
    /// neighbours are the adjacent images, and the partners are drawn from
    /// them only, the same for the same (seed, epoch, image), each one in turn.
    #[test]
    fn pixel_neighbours_and_partners() {
        let shape = Shape {
            height: 2,
            width: 2,
            channels: 1,
        };
        let n = 12;
        let images = Images {
            shape,
            pixels: (0..n).flat_map(|i| [(i * 10) as u8; 4]).collect(),
            len: n,
        };
        let nb = Neighbours::in_pixels(&images, 2, 2);
        assert_eq!(nb, Neighbours::in_pixels(&images, 2, 1));
        assert_eq!(&nb.idx[..2], &[1, 2]);
        assert_eq!(&nb.idx[5 * 2..6 * 2], &[4, 6]);
        assert_eq!(&nb.idx[(n - 1) * 2..], &[10, 9]);
        let mut seen = [false; 2];
        for epoch in 0..20 {
            let p = nb.partner(5, 3, epoch);
            assert_eq!(p, nb.partner(5, 3, epoch));
            assert!(p == 4 || p == 6, "{p}");
            seen[usize::from(p == 6)] = true;
        }
        assert_eq!(seen, [true, true]);
    }
    /// Rows on a line: the feature neighbours are the adjacent rows, the same
    /// on any thread count.
    #[test]
    fn feature_neighbours_are_the_nearest_rows() {
        let values: Vec<f32> = (0..8).flat_map(|i| [i as f32, 2.0 * i as f32]).collect();
        let nb = Neighbours::in_features(&values, 2, 2, 2);
        assert_eq!(nb, Neighbours::in_features(&values, 2, 2, 1));
        assert_eq!(&nb.idx[..2], &[1, 2]);
        assert_eq!(&nb.idx[3 * 2..4 * 2], &[2, 4]);
        assert_eq!(&nb.idx[7 * 2..], &[6, 5]);
    }

    /// The union lists `a`'s then `b`'s neighbours per image.
    #[test]
    fn union_lists_both() {
        let a = Neighbours {
            k: 1,
            idx: std::sync::Arc::new(vec![1, 0, 0]),
        };
        let b = Neighbours {
            k: 2,
            idx: std::sync::Arc::new(vec![2, 1, 2, 0, 1, 0]),
        };
        let u = Neighbours::union(&a, &b);
        assert_eq!(u.k, 3);
        assert_eq!(*u.idx, vec![1, 2, 1, 0, 2, 0, 0, 1, 0]);
    }

    /// `--knn-space joint`: the Euclidean neighbours of the joint rows are
    /// the neighbours by the mean of the two centred cosine similarities,
    /// computed here directly in f64; a row equal to the mean stays zero.
    #[test]
    fn joint_rows_rank_by_mean_cosine() {
        let (n, pdim, fdim) = (40, 6, 3);
        let mut rng = SplitMix64::keyed(&[7]);
        let pixels: Vec<u8> = (0..n * pdim).map(|_| rng.below(256) as u8).collect();
        // Features on another scale, so an unscaled concatenation would
        // rank by them alone.
        let features: Vec<f32> = (0..n * fdim)
            .map(|_| rng.below(1000) as f32 * 50.0)
            .collect();
        let (rows, dim) = joint_rows(&pixels, pdim, &features, fdim);
        assert_eq!((rows.len(), dim), (n * (pdim + fdim), pdim + fdim));
        let centred = |v: Vec<f64>, d: usize| -> Vec<Vec<f64>> {
            let mean: Vec<f64> = (0..d)
                .map(|j| (0..n).map(|i| v[i * d + j]).sum::<f64>() / n as f64)
                .collect();
            (0..n)
                .map(|i| (0..d).map(|j| v[i * d + j] - mean[j]).collect())
                .collect()
        };
        let p = centred(pixels.iter().map(|&v| f64::from(v)).collect(), pdim);
        let f = centred(features.iter().map(|&v| f64::from(v)).collect(), fdim);
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let k = 5;
        let nb = Neighbours::in_features(&rows, dim, k, 2);
        for i in 0..n {
            let mut by_sim: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (-(cos(&p[i], &p[j]) + cos(&f[i], &f[j])) / 2.0, j))
                .collect();
            by_sim.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let want: Vec<u32> = by_sim[..k].iter().map(|&(_, j)| j as u32).collect();
            assert_eq!(&nb.idx[i * k..(i + 1) * k], &want[..], "image {i}");
        }
        // Three equal images all equal the mean: their rows are zero.
        let (rows, _) = joint_rows(&[5; 6], 2, &[1.0; 3], 1);
        assert!(rows.iter().all(|&v| v == 0.0));
    }

    /// When the feature list is (re)computed and when it is in use.
    #[test]
    fn feature_list_schedule() {
        let f = |refresh, at_start| FeatureNeighbours {
            joint: false,
            k: 5,
            refresh,
            at_start,
            plain: AugmentConfig::default(),
        };
        let every3 = f(3, false);
        let due: Vec<usize> = (0..10).filter(|&e| every3.due(e)).collect();
        assert_eq!(due, [3, 6, 9]);
        assert!(!every3.active(2) && every3.active(3) && every3.active(9));
        let once = f(0, true);
        let due: Vec<usize> = (0..10).filter(|&e| once.due(e)).collect();
        assert_eq!(due, [0]);
        assert!((0..10).all(|e| once.active(e)));
        let both = f(4, true);
        let due: Vec<usize> = (0..10).filter(|&e| both.due(e)).collect();
        assert_eq!(due, [0, 4, 8]);
        assert!(!f(0, false).active(5) && !f(0, false).due(0));
    }
}
