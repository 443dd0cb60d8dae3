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
use tsimcne_augment::{AugmentConfig, Shape, two_views};
use tsimcne_format::ImageSet;
use tsimcne_format::atomic::write_bytes_atomic;
use tsimcne_model::{Backprop, Model};
use tsimcne_rng::SplitMix64;

use crate::error::{Result, TrainError};
use crate::loss::{Similarity, info_nce};
use crate::schedule::lr_schedule;
use crate::sgd::{Sgd, SgdConfig};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOG_FILE: &str = "log.csv";
const MOMENTUM_PREFIX: &str = "momentum.";
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
}

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
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = model.state()?;
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

/// Restores a checkpoint into `model` and `sgd`; returns the epochs done.
fn load_checkpoint(
    path: &Path,
    model: &mut Model,
    sgd: &mut Sgd,
    fingerprint: &str,
) -> Result<usize> {
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
    model.assign(path, &st, MOMENTUM_PREFIX)?;
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
    Ok(done)
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
    let mut sgd = Sgd::new(model.trainable(prefixes.as_deref()), s.sgd);
    // Training the output layer alone (the project stage): nothing below it
    // needs a gradient, so the graph is cut there. Same values, same updates.
    let out_layer = format!(
        "{}.{}",
        tsimcne_format::model_keys::HEAD,
        tsimcne_format::model_keys::HEAD_OUT
    );
    let output_only = prefixes.as_deref() == Some(&[out_layer.as_str()][..]);
    let ckpt: PathBuf = dir.join(CHECKPOINT_FILE);
    let start = if ckpt.exists() {
        load_checkpoint(&ckpt, model, &mut sgd, &s.fingerprint)?
    } else {
        0
    };
    let mut logs = read_log(&dir.join(LOG_FILE), start);
    obs.start((s.epochs * steps) as u64, (start * steps) as u64);
    let shape = images.shape;
    let view_len = shape.len();
    let dims = (2 * s.batch_size, shape.channels, shape.height, shape.width);
    for (epoch, &lr) in lrs.iter().enumerate().skip(start) {
        let t0 = Instant::now();
        let order = epoch_order(n, s.seed, epoch);
        let mut loss_sum = 0.0;
        // Augment the next batch on worker threads while this one trains.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::sync_channel::<Vec<f32>>(1);
            let order = &order;
            scope.spawn(move || {
                for step in 0..steps {
                    let idx = &order[step * s.batch_size..(step + 1) * s.batch_size];
                    let imgs: Vec<&[u8]> = idx.iter().map(|&i| images.image(i)).collect();
                    let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
                    let mut buf = vec![0f32; 2 * s.batch_size * view_len];
                    two_views(
                        &imgs,
                        &ids,
                        shape,
                        &s.augment,
                        s.seed,
                        epoch as u64,
                        s.threads,
                        &mut buf,
                    );
                    if tx.send(buf).is_err() {
                        return; // the trainer stopped early
                    }
                }
            });
            for step in 0..steps {
                let buf = rx
                    .recv()
                    .map_err(|_| TrainError::Invalid("augmentation worker stopped".into()))?;
                let x = Tensor::from_vec(buf, dims, model.device())?;
                let backprop = if output_only {
                    Backprop::OutputOnly
                } else {
                    Backprop::Full
                };
                let (loss, grads) =
                    model.loss_and_grads(&x, backprop, |z| info_nce(z, s.similarity))?;
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
            save_checkpoint(&ckpt, model, &sgd, epoch + 1, &s.fingerprint)?;
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
