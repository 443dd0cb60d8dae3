//! What a rerun resumes from: the checkpoint (every tensor that changes,
//! the momentum buffers, the epoch, the settings' fingerprint and the
//! feature-space neighbour list in use) and the epoch log.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use tsimcne_format::atomic::write_bytes_atomic;
use tsimcne_model::Model;

use crate::error::{Result, TrainError};
use crate::positives::Neighbours;
use crate::sgd::Sgd;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const LOG_FILE: &str = "log.csv";
const MOMENTUM_PREFIX: &str = "momentum.";

/// Checkpoint key of the feature-space neighbour list in use.
pub(crate) const FEATURE_NEIGHBOURS_KEY: &str = "positives.features";

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

pub(crate) fn csv(logs: &[EpochLog]) -> String {
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
pub(crate) fn read_log(path: &Path, up_to: usize) -> Vec<EpochLog> {
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
/// names, `momentum.<name>` buffers, and the epoch, fingerprint and a CRC-32
/// of every tensor ([`tensors_crc32`]) in the safetensors metadata. One
/// file, so the parts can never disagree.
///
/// **Invariant:** a checkpoint that loads is the one that was saved: a cut
/// or a changed byte anywhere is an error (the header by its structure and
/// the fingerprint, the tensors by their CRC-32), never a resume from other
/// weights.
pub(crate) fn save_checkpoint(
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
    let bad = |e: safetensors::SafeTensorError| TrainError::Checkpoint {
        path: path.into(),
        detail: e.to_string(),
    };
    // The sum of the tensors as safetensors stores them (the same `View`
    // that `serialize` writes).
    let crc = tensors_crc32(tensors.iter().map(|(n, t)| (n.as_str(), t)).collect());
    let state = serde_json::json!({
        "epochs_done": epochs_done,
        "fingerprint": fingerprint,
        "crc32": crc,
    })
    .to_string();
    let meta = std::collections::HashMap::from([(CHECKPOINT_META.to_string(), state)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(bad)?;
    write_bytes_atomic(path, &bytes)?;
    Ok(())
}

/// CRC-32 of tensors in name order: each one's name, dtype, shape and
/// bytes as safetensors stores them.
fn tensors_crc32<V: safetensors::View>(mut tensors: Vec<(&str, V)>) -> u32 {
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = crc32fast::Hasher::new();
    for (name, view) in tensors {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}", view.dtype()).as_bytes());
        h.update(&(view.shape().len() as u64).to_le_bytes());
        for d in view.shape() {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&view.data());
    }
    h.finalize()
}

const CHECKPOINT_META: &str = "tsimcne.checkpoint";

/// The checkpoint metadata entry.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    epochs_done: usize,
    fingerprint: String,
    crc32: u32,
}

/// Restores a checkpoint into `model` and `sgd`; returns the epochs done
/// and the feature-space neighbour list in use, if it holds one.
pub(crate) fn load_checkpoint(
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
        .and_then(|m| serde_json::from_str::<State>(m).ok())
        .ok_or_else(|| {
            bad("the checkpoint's state is damaged or from an older version; pass --restart to start over".into())
        })?;
    if state.fingerprint != fingerprint {
        return Err(bad(
            "the checkpoint was made with other settings; rerun with the same settings to resume, or pass --restart to start over"
                .into(),
        ));
    }
    let done = state.epochs_done;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
    let stored = st.tensors();
    if tensors_crc32(stored.iter().map(|(n, v)| (n.as_str(), v)).collect()) != state.crc32 {
        return Err(bad(
            "the checkpoint is damaged (its tensors do not match their CRC-32); pass --restart to start over"
                .into(),
        ));
    }
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
