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

/// The per-channel normalisations a run can name (`pretrain --normalize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum NormalizePreset {
    /// Keep pixels in [0, 1] (the released library).
    None,
    /// CIFAR-10 mean and std (the paper's code).
    Cifar10,
    /// CIFAR-100 mean and std.
    Cifar100,
}

impl NormalizePreset {
    /// The mean and std of the preset; `None` for pixels as they are.
    pub fn stats(self) -> Option<Normalize> {
        let (mean, std) = match self {
            Self::None => return None,
            Self::Cifar10 => ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
            Self::Cifar100 => ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
        };
        Some(Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }
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
    /// The augmentations and positives, when they differ from the recipe's
    /// (absent: the recipe's, RandomResizedCrop scale 0.2–1, colour jitter
    /// p = 0.8, both views of the same image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentSettings>,
    /// 2-D stages only: the fixed spread (root mean square coordinate) the
    /// loss sees each batch's output at (`--map-scale`); absent: the output
    /// as it is (the recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_scale: Option<f64>,
    /// Finetune only: the stem and the first `freeze_layers` stages were
    /// fixed (`--freeze-layers`), their BatchNorm in eval mode; absent: 0,
    /// everything trained (the recipe).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub freeze_layers: usize,
    /// Not hyperparameters: they do not enter the resume fingerprint.
    pub threads: usize,
    pub checkpoint_every: usize,
    /// Where it trained: `cpu` or `cuda:N` (absent in files written before
    /// `--device` existed, which all trained on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `tf32` when a GPU's convolutions ran on TF32 tensor cores
    /// (`--conv-math tf32`), `bf16` when its activations and convolutions
    /// were bf16 (`ConvMath::Bf16`); absent: exact f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_math: Option<String>,
    /// `next` when a GPU trained with the kernels not yet run on a GPU
    /// before (`--gpu-path next`); absent: the tested ones, or the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_path: Option<String>,
}

/// The augmentation settings a stage can change (the rest are the recipe's).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSettings {
    /// Lower bound of RandomResizedCrop's area scale (the upper is 1).
    pub crop_min: f64,
    /// Probability of the colour jitter.
    pub jitter_p: f64,
    /// Opt-in, not the recipe: the second view of an image is made from one
    /// of its `knn_positives` nearest images in pixel space (0: from the
    /// image itself, the recipe).
    #[serde(default)]
    pub knn_positives: usize,
    /// Where the `knn_positives` neighbours are found.
    #[serde(default, skip_serializing_if = "KnnSpace::is_pixels")]
    pub knn_space: KnnSpace,
    /// Feature-space neighbours are recomputed from the model being trained
    /// every `knn_refresh` epochs (0: never; in a 2-D stage they are
    /// computed once, from the model it starts from).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub knn_refresh: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The space whose nearest neighbours serve as positives (`--knn-space`;
/// a variant's first paragraph is its `--help` line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum KnnSpace {
    /// The images' pixels (Euclidean on the u8 values).
    #[default]
    Pixels,
    /// The backbone features of the model the stage starts from (eval mode).
    Features,
    /// Both lists, each image's partner drawn from the 2K candidates.
    Both,
    /// One list: the K nearest by the mean of the two cosine similarities
    /// (pixels and backbone features, each centred on the table's mean).
    Joint,
}

impl KnnSpace {
    pub fn is_pixels(&self) -> bool {
        *self == KnnSpace::Pixels
    }
}

impl AugmentSettings {
    /// The recipe's: crop scale 0.2–1, jitter p = 0.8, both views of the
    /// same image.
    pub const RECIPE: AugmentSettings = AugmentSettings {
        crop_min: 0.2,
        jitter_p: 0.8,
        knn_positives: 0,
        knn_space: KnnSpace::Pixels,
        knn_refresh: 0,
    };

    /// What a training record holds: `None` for the recipe's settings, so
    /// records (and resume fingerprints) of recipe runs are unchanged.
    pub fn record(self) -> Option<AugmentSettings> {
        (self != Self::RECIPE).then_some(self)
    }

    /// A one-line error unless `0 < crop_min ≤ 1` and `0 ≤ jitter_p ≤ 1`.
    pub fn check(self) -> std::result::Result<(), String> {
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            return Err(format!(
                "crop scale minimum must be in (0, 1], got {}",
                self.crop_min
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter_p) {
            return Err(format!(
                "jitter probability must be in [0, 1], got {}",
                self.jitter_p
            ));
        }
        Ok(())
    }
}

impl Default for AugmentSettings {
    fn default() -> Self {
        Self::RECIPE
    }
}

/// The [`TrainingConfig`] fields that do not change a result beyond float
/// (or TF32) rounding, and so do not key a run: the thread count and the
/// checkpoint interval (bit-identical results), the device, the
/// convolution arithmetic and the GPU kernels' path. Each is the flag of the same name with `-` for
/// `_`. The one list: pipelines/stage.sh and the Makefile's run names leave
/// out the same flags and variables (tests/docs.rs checks them).
pub const RESULT_NEUTRAL_FIELDS: [&str; 5] = [
    "threads",
    "checkpoint_every",
    "device",
    "conv_math",
    "gpu_path",
];

impl TrainingConfig {
    /// Everything that changes the result, as canonical JSON; a checkpoint
    /// made with another fingerprint is not resumed. The
    /// [`RESULT_NEUTRAL_FIELDS`] are left out (like the kernels): a run may
    /// resume on another device, and then agrees with an uninterrupted one up
    /// to float (or TF32) rounding, not bit for bit.
    pub fn fingerprint(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        if let Some(o) = v.as_object_mut() {
            for field in RESULT_NEUTRAL_FIELDS {
                o.remove(field);
            }
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
                augment: None,
                map_scale: None,
                freeze_layers: 0,
                device: Some("cpu".into()),
                conv_math: None,
                gpu_path: None,
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
    fn fingerprint_ignores_threads_checkpoints_and_device() {
        let a = sample().training;
        let mut b = a.clone();
        b.threads = 7;
        b.checkpoint_every = 3;
        b.device = Some("cuda:0".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.lr = 0.5;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// No map scale (the recipe) is not written, so records from before
    /// `--map-scale` read back unchanged; a scale round-trips and changes the
    /// fingerprint.
    #[test]
    fn map_scale_is_written_only_when_set() {
        let a = sample().training;
        assert_eq!(a.map_scale, None);
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("map_scale"), "{text}");
        let mut b = a.clone();
        b.map_scale = Some(11.0);
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains("\"map_scale\":11.0"), "{text}");
        assert_eq!(serde_json::from_str::<TrainingConfig>(&text).unwrap(), b);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// Nothing frozen (the recipe) is not written; frozen layers round-trip
    /// and change the fingerprint.
    #[test]
    fn freeze_layers_are_written_only_when_set() {
        let a = sample().training;
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("freeze_layers"), "{text}");
        let mut b = a.clone();
        b.freeze_layers = 2;
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains("\"freeze_layers\":2"), "{text}");
        assert_eq!(serde_json::from_str::<TrainingConfig>(&text).unwrap(), b);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// Recipe augmentations are not recorded (old records stay valid and
    /// resume); other settings are, change the fingerprint and round-trip.
    #[test]
    fn augment_settings_are_recorded_only_when_not_the_recipe() {
        assert_eq!(AugmentSettings::default().record(), None);
        let weak = AugmentSettings {
            crop_min: 0.5,
            jitter_p: 0.0,
            knn_positives: 15,
            knn_space: KnnSpace::Both,
            knn_refresh: 5,
        };
        assert_eq!(weak.record(), Some(weak));
        let a = sample().training;
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("augment"), "{text}");
        let mut b = a.clone();
        b.augment = weak.record();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let mut c = sample();
        c.training = b;
        c.save(&p).unwrap();
        assert_eq!(ModelConfig::load(&p).unwrap(), c);
        // Every space's wire name.
        for (space, name) in [
            (KnnSpace::Pixels, "\"pixels\""),
            (KnnSpace::Features, "\"features\""),
            (KnnSpace::Both, "\"both\""),
            (KnnSpace::Joint, "\"joint\""),
        ] {
            assert_eq!(serde_json::to_string(&space).unwrap(), name);
            assert_eq!(serde_json::from_str::<KnnSpace>(name).unwrap(), space);
        }
        assert!(weak.check().is_ok());
        for bad in [
            (0.0, 0.5),
            (1.5, 0.5),
            (0.5, -0.1),
            (0.5, 1.1),
            (f64::NAN, 0.5),
        ] {
            let s = AugmentSettings {
                crop_min: bad.0,
                jitter_p: bad.1,
                knn_positives: 0,
                knn_space: KnnSpace::Pixels,
                knn_refresh: 0,
            };
            assert!(s.check().is_err(), "{bad:?}");
        }
    }
}
