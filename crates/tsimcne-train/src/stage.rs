//! The stages as library calls. A binary parses its flags into a config and
//! calls one of these; nothing here reads argv or the environment.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tsimcne_augment::AugmentConfig;
use tsimcne_format::model_config::{
    InputShape, MODEL_CONFIG_FILE, MODEL_CONFIG_VERSION, MODEL_FILE, ModelConfig, Normalize,
    TrainingConfig,
};
use tsimcne_format::vectors::{KIND_FEATURES, VectorColumn, write_vectors};
use tsimcne_model::{Model, check_input, preset};

use crate::error::{Result, TrainError};
use crate::loss::Similarity;
use crate::sgd::SgdConfig;
use crate::trainer::{
    CHECKPOINT_FILE, EpochLog, Images, LOG_FILE, Observer, Settings, embed_all, train,
};

pub const FEATURES_FILE: &str = "features.parquet";

/// The contrastive loss by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    Cauchy,
    Cosine,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Cauchy => "cauchy",
            LossKind::Cosine => "cosine",
        }
    }

    pub fn similarity(self) -> Similarity {
        match self {
            LossKind::Cauchy => Similarity::Cauchy,
            LossKind::Cosine => Similarity::SIMCLR,
        }
    }
}

/// The resolved settings of `pretrain`.
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    pub images: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    /// `None`: 0.03·batch/256.
    pub lr: Option<f64>,
    pub warmup: usize,
    pub seed: u64,
    pub backbone: String,
    pub out_dim: usize,
    pub loss: LossKind,
    pub threads: usize,
    pub checkpoint_every: usize,
    /// Discard an existing checkpoint instead of resuming or refusing.
    pub restart: bool,
    pub normalize: Option<Normalize>,
}

/// What a stage did.
#[derive(Clone, Debug)]
pub struct StageSummary {
    pub epochs: Vec<EpochLog>,
    pub images: usize,
    pub out: PathBuf,
}

fn augment_config(normalize: &Option<Normalize>) -> AugmentConfig {
    AugmentConfig {
        normalize: normalize.as_ref().map(|n| (n.mean.clone(), n.std.clone())),
        ..AugmentConfig::default()
    }
}

fn prepare_dir(dir: &Path, restart: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        TrainError::Format(tsimcne_format::FormatError::Io {
            path: dir.into(),
            source: e,
        })
    })?;
    if restart {
        for f in [CHECKPOINT_FILE, LOG_FILE] {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| {
                    TrainError::Format(tsimcne_format::FormatError::Io {
                        path: p.clone(),
                        source: e,
                    })
                })?;
            }
        }
    }
    Ok(())
}

/// `pretrain`: contrastive training with the 128-D head; writes
/// `model.safetensors`, `config.json`, `log.csv` and `features.parquet`.
pub fn pretrain(cfg: &PretrainConfig, obs: &dyn Observer) -> Result<StageSummary> {
    let set = tsimcne_format::read_image_table(&cfg.images)?;
    let meta = set.meta.clone();
    let (h, w, c) = (
        meta.height as usize,
        meta.width as usize,
        meta.channels as usize,
    );
    let arch = preset(&cfg.backbone, c, cfg.out_dim)?;
    check_input(&arch, c, h, w)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", cfg.images.display())))?;
    if let Some(n) = &cfg.normalize
        && (n.mean.len() != c || n.std.len() != c)
    {
        return Err(TrainError::Invalid(format!(
            "normalisation needs {c} means and stds"
        )));
    }
    let lr = cfg.lr.unwrap_or_else(|| crate::base_lr(cfg.batch_size));
    let sgd = SgdConfig::default();
    let training = TrainingConfig {
        backbone: cfg.backbone.clone(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr,
        warmup: cfg.warmup,
        seed: cfg.seed,
        loss: cfg.loss.name().into(),
        momentum: sgd.momentum,
        weight_decay: sgd.weight_decay,
        clip_value: sgd.clip_value,
        images_checksum: meta.source_checksum.clone(),
        images_rows: set.len(),
        from: None,
        threads: cfg.threads,
        checkpoint_every: cfg.checkpoint_every,
    };
    let config = ModelConfig {
        format_version: MODEL_CONFIG_VERSION,
        stage: "pretrain".into(),
        arch: arch.clone(),
        input: InputShape {
            height: h,
            width: w,
            channels: c,
        },
        normalize: cfg.normalize.clone(),
        training: training.clone(),
    };
    prepare_dir(&cfg.out, cfg.restart)?;
    let device = Device::Cpu;
    let mut model = Model::new(&arch, cfg.seed, &device)?;
    let images = Images::from_set(set);
    let augment = augment_config(&cfg.normalize);
    let settings = Settings {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr,
        warmup: cfg.warmup,
        seed: cfg.seed,
        similarity: cfg.loss.similarity(),
        sgd,
        augment: augment.clone(),
        threads: cfg.threads,
        checkpoint_every: cfg.checkpoint_every,
        trainable: None,
        fingerprint: format!("pretrain {}", training.fingerprint()),
    };
    let epochs = train(&mut model, &images, &settings, &cfg.out, obs)?;
    // Outputs: features, model, and config.json last (it marks a finished stage).
    let (feats, head) = embed_all(&model, &images, &augment, 512)?;
    let ids: Vec<u32> = (0..images.len as u32).collect();
    let cols = [
        VectorColumn {
            name: "backbone",
            dim: arch.feature_dim(),
            values: &feats,
        },
        VectorColumn {
            name: "head",
            dim: arch.out_dim,
            values: &head,
        },
    ];
    write_vectors(
        &cfg.out.join(FEATURES_FILE),
        KIND_FEATURES,
        &ids,
        &cols,
        &[],
    )?;
    model.save(&cfg.out.join(MODEL_FILE))?;
    config.save(&cfg.out.join(MODEL_CONFIG_FILE))?;
    Ok(StageSummary {
        epochs,
        images: images.len,
        out: cfg.out.clone(),
    })
}
