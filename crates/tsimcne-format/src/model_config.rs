//! `config.json`, the sidecar of every model directory: the architecture,
//! the input it takes, and the full resolved training configuration.
//!
//! **Invariant:** unknown keys and wrong types are refused, so a typo in a
//! hand-edited config fails loudly instead of being ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_bytes_atomic;
use crate::error::{FormatError, Result};
use crate::model_keys::ResNetArch;

pub const MODEL_CONFIG_VERSION: u32 = 1;
pub const MODEL_CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
/// The largest `config.json` read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The image shape a model takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// Per-channel normalisation applied after the augmentations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The resolved settings a stage trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub backbone: String,
    pub epochs: usize,
    /// Images per batch (each gives two views).
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    /// `cauchy` or `cosine`.
    pub loss: String,
    pub momentum: f64,
    pub weight_decay: f64,
    pub clip_value: Option<f64>,
    /// `tsimcne.source_checksum` and row count of the image table trained on.
    pub images_checksum: String,
    pub images_rows: usize,
    /// The model directory this stage started from (project, finetune).
    pub from: Option<String>,
    /// Project only: how the new output layer started, `random` (the
    /// recipe) or `pca`; absent in other stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Not hyperparameters: they do not enter the resume fingerprint.
    pub threads: usize,
    pub checkpoint_every: usize,
}

impl TrainingConfig {
    /// Everything that changes the result, as canonical JSON; a checkpoint
    /// made with another fingerprint is not resumed.
    pub fn fingerprint(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(o) = v.as_object_mut() {
            o.remove("threads");
            o.remove("checkpoint_every");
        }
        v.to_string()
    }
}

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub format_version: u32,
    /// `pretrain`, `project` or `finetune`.
    pub stage: String,
    pub arch: ResNetArch,
    pub input: InputShape,
    pub normalize: Option<Normalize>,
    pub training: TrainingConfig,
}

impl ModelConfig {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).expect("config serialises");
        json.push('\n');
        write_bytes_atomic(path, json.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        // A config is a few kilobytes; more is not a config.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(f, MAX_CONFIG_BYTES + 1),
                    &mut text,
                )
            })
            .map_err(|e| FormatError::Io {
                path: path.into(),
                source: e,
            })?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(FormatError::invalid(
                path,
                format!("bad model config: larger than {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        Self::parse(path, &text)
    }

    /// Parses and checks the text of `config.json` (`path` names it in
    /// errors): unknown keys, wrong types, a newer version and an
    /// architecture out of bounds are refused.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let cfg: ModelConfig = serde_json::from_str(text)
            .map_err(|e| FormatError::invalid(path, format!("bad model config: {e}")))?;
        if cfg.format_version > MODEL_CONFIG_VERSION {
            return Err(FormatError::invalid(
                path,
                format!(
                    "model config version {} is newer than this build reads ({MODEL_CONFIG_VERSION})",
                    cfg.format_version
                ),
            ));
        }
        cfg.arch
            .check()
            .map_err(|e| FormatError::invalid(path, format!("bad model config: arch: {e}")))?;
        if cfg.input.channels != cfg.arch.in_channels {
            return Err(FormatError::invalid(
                path,
                format!(
                    "bad model config: input has {} channels, arch.in_channels is {}",
                    cfg.input.channels, cfg.arch.in_channels
                ),
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> ModelConfig {
        ModelConfig {
            format_version: MODEL_CONFIG_VERSION,
            stage: "pretrain".into(),
            arch: ResNetArch {
                in_channels: 1,
                widths: vec![4, 8],
                blocks: vec![1, 1],
                head_hidden: 16,
                out_dim: 128,
            },
            input: InputShape {
                height: 28,
                width: 28,
                channels: 1,
            },
            normalize: None,
            training: TrainingConfig {
                backbone: "tiny".into(),
                epochs: 3,
                batch_size: 16,
                lr: 0.001875,
                warmup: 1,
                seed: 0,
                loss: "cauchy".into(),
                momentum: 0.9,
                weight_decay: 5e-4,
                clip_value: Some(4.0),
                images_checksum: "md5:00".into(),
                images_rows: 100,
                from: None,
                threads: 2,
                checkpoint_every: 1,
                init: None,
            },
        }
    }

    #[test]
    fn round_trip_and_strictness() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let c = sample();
        c.save(&p).unwrap();
        assert_eq!(ModelConfig::load(&p).unwrap(), c);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"stage\"", "\"stag\"", 1)).unwrap();
        let e = ModelConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("unknown field") && e.contains("config.json"),
            "{e}"
        );
        std::fs::write(&p, text.replacen("\"epochs\": 3", "\"epochs\": \"3\"", 1)).unwrap();
        assert!(
            ModelConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("invalid type")
        );
    }

    #[test]
    fn fingerprint_ignores_threads_only() {
        let a = sample().training;
        let mut b = a.clone();
        b.threads = 7;
        b.checkpoint_every = 3;
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.lr = 0.5;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
