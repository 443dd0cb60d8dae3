//! The stages as library calls. A binary parses its flags into a config and
//! calls one of these; nothing here reads argv or the environment.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tsimcne_augment::AugmentConfig;
use tsimcne_format::atomic;
use tsimcne_format::model_config::{
    AugmentSettings, InputShape, KnnSpace, MODEL_CONFIG_FILE, MODEL_CONFIG_VERSION, MODEL_FILE,
    ModelConfig, Normalize, TrainingConfig,
};
use tsimcne_format::vectors::{KIND_FEATURES, VectorColumn, write_vectors};
use tsimcne_model::{ConvMath, DeviceSpec, Kernels, Model, check_input, preset};

use crate::checkpoint::{CHECKPOINT_FILE, EpochLog, LOG_FILE};
use crate::embed::write_model_embedding;
use crate::error::{Result, TrainError};
use crate::loss::Similarity;
use crate::model_dir::{check_images, fnv1a, load_model_dir_on};
use crate::pca::pca_output_layer;
use crate::positives::{FeatureNeighbours, Neighbours, Positives};
use crate::sgd::SgdConfig;
use crate::trainer::{GpuPath, Images, Observer, Settings, embed_all, train};

pub const FEATURES_FILE: &str = "features.parquet";

/// The contrastive loss by name (`--loss`; a variant's first paragraph is
/// its `--help` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LossKind {
    /// t-SimCNE: InfoNCE with the Cauchy kernel 1/(1+d²).
    Cauchy,
    /// SimCLR: cosine similarity over temperature 0.5.
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

/// The training options every stage shares, resolved and checked once: the
/// schedule, the optimiser, the loss, the views and how the stage runs. The
/// one record of each of these knobs between the command line, config.json
/// and the training loop's [`Settings`].
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    /// `None`: the stage's recipe value.
    pub lr: Option<f64>,
    pub warmup: usize,
    /// SGD's L2 weight decay (the recipe: 5e-4).
    pub weight_decay: f64,
    pub seed: u64,
    pub loss: LossKind,
    pub threads: usize,
    pub checkpoint_every: usize,
    /// Discard an existing checkpoint instead of resuming or refusing.
    pub restart: bool,
    /// Where to train.
    pub device: DeviceSpec,
    /// The backbone's implementation; `None`: [`Kernels::default_for`] the
    /// device (ours where they run).
    pub kernels: Option<Kernels>,
    /// The arithmetic of a GPU's convolutions (the CPU's is exact f32).
    pub conv_math: ConvMath,
    /// Which forms of our GPU kernels to use (the CPU ignores it).
    pub gpu_path: GpuPath,
    /// Crop scale and jitter probability of the training views, and the
    /// opt-in pixel-neighbour positives.
    pub augment: AugmentSettings,
}

impl TrainOptions {
    /// A one-line error for the first option out of its range.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.checkpoint_every == 0 {
            return Err(TrainError::Invalid(format!(
                "the epochs ({}), the batch size ({}) and the checkpoint interval ({}) \
                 must be positive",
                self.epochs, self.batch_size, self.checkpoint_every
            )));
        }
        if let Some(lr) = self.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(TrainError::Invalid(format!(
                "the learning rate must be a finite number > 0, got {lr}"
            )));
        }
        self.augment.check().map_err(TrainError::Invalid)?;
        check_weight_decay(self.weight_decay)
    }

    /// The config.json record of a stage trained with these options on `set`.
    fn record(&self, plan: &Plan<'_>, set: &tsimcne_format::ImageSet) -> TrainingConfig {
        let sgd = self.sgd();
        TrainingConfig {
            backbone: plan.backbone.to_string(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: plan.lr,
            warmup: self.warmup,
            seed: self.seed,
            loss: self.loss.name().into(),
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
            clip_value: sgd.clip_value,
            images_checksum: set.meta.source_checksum.clone(),
            images_rows: set.len(),
            from: plan.from.clone(),
            threads: self.threads,
            checkpoint_every: self.checkpoint_every,
            init: plan.init.clone(),
            augment: self.augment.record(),
            map_scale: plan.map_scale,
            freeze_layers: plan.freeze_layers,
            device: Some(self.device.to_string()),
            conv_math: match self.conv_math {
                _ if self.device.is_cpu() => None,
                ConvMath::Exact => None,
                ConvMath::Tf32 => Some("tf32".to_string()),
                ConvMath::Bf16 => Some("bf16".to_string()),
            },
            gpu_path: (self.gpu_path == GpuPath::Next && !self.device.is_cpu())
                .then(|| "next".to_string()),
        }
    }

    /// The training loop's settings for the stage `record` describes.
    fn settings(&self, plan: Plan<'_>, record: &TrainingConfig, positives: Positives) -> Settings {
        Settings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: plan.lr,
            warmup: self.warmup,
            seed: self.seed,
            similarity: self.loss.similarity(),
            sgd: self.sgd(),
            augment: train_augment_config(plan.normalize, self.augment),
            threads: self.threads,
            checkpoint_every: self.checkpoint_every,
            trainable: plan.trainable,
            fingerprint: format!(
                "{} {}{}",
                plan.stage,
                record.fingerprint(),
                plan.fingerprint_extra
            ),
            positives,
            map_scale: plan.map_scale,
            freeze_layers: plan.freeze_layers,
            gpu_path: self.gpu_path,
        }
    }

    fn sgd(&self) -> SgdConfig {
        SgdConfig {
            weight_decay: self.weight_decay,
            ..SgdConfig::default()
        }
    }

    /// The model these options train: `model` with the chosen kernels.
    fn prepare(&self, mut model: Model, device: &Device) -> Result<Model> {
        model.set_kernels(self.kernels.unwrap_or_else(|| Kernels::default_for(device)))?;
        model.set_conv_math(self.conv_math);
        model.set_bn_sums(self.gpu_path.bn_sums());
        model.set_gpu_loss(self.gpu_path.loss());
        model.set_memory_format(self.gpu_path.memory_format(self.conv_math));
        Ok(model)
    }
}

/// The resolved settings of `pretrain`.
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    pub images: PathBuf,
    pub out: PathBuf,
    pub backbone: String,
    pub out_dim: usize,
    pub normalize: Option<Normalize>,
    pub train: TrainOptions,
}

/// What a stage did.
#[derive(Clone, Debug)]
pub struct StageSummary {
    pub epochs: Vec<EpochLog>,
    pub images: usize,
    pub out: PathBuf,
}

/// The augmentation config of a model's plain (unaugmented) forward pass:
/// its normalisation only.
pub(crate) fn augment_config(normalize: &Option<Normalize>) -> AugmentConfig {
    AugmentConfig {
        normalize: normalize.as_ref().map(|n| (n.mean.clone(), n.std.clone())),
        ..AugmentConfig::default()
    }
}

/// The training views' augmentations: the recipe's with `augment`'s crop
/// scale and jitter probability.
fn train_augment_config(normalize: &Option<Normalize>, augment: AugmentSettings) -> AugmentConfig {
    AugmentConfig {
        crop_scale: (augment.crop_min, 1.0),
        jitter_p: augment.jitter_p,
        ..augment_config(normalize)
    }
}

/// The positives of `--knn-positives` (none: the recipe): neighbours in
/// pixel space, in the backbone features of the model being trained, or
/// both. `trained`: the model is trained already (a 2-D stage), so its
/// feature neighbours are used from the first epoch; in pretraining they
/// start at epoch `knn_refresh`.
fn positives(
    images: &Images,
    augment: AugmentSettings,
    threads: usize,
    trained: bool,
    normalize: &Option<Normalize>,
) -> Result<Positives> {
    let k = augment.knn_positives;
    if k == 0 {
        return Ok(Positives::default());
    }
    if k >= images.len {
        return Err(TrainError::Invalid(format!(
            "--knn-positives {k} needs more than {k} images, got {}",
            images.len
        )));
    }
    let pixels = matches!(augment.knn_space, KnnSpace::Pixels | KnnSpace::Both);
    let features = augment.knn_space != KnnSpace::Pixels;
    if features && !trained && augment.knn_refresh == 0 {
        return Err(TrainError::Invalid(
            "--knn-space features, both or joint in pretrain needs --knn-refresh N > 0 \
             (the network's features are random at the start)"
                .into(),
        ));
    }
    Ok(Positives {
        fixed: pixels.then(|| Neighbours::in_pixels(images, k, threads)),
        features: features.then(|| FeatureNeighbours {
            k,
            refresh: augment.knn_refresh,
            at_start: trained,
            joint: augment.knn_space == KnnSpace::Joint,
            plain: augment_config(normalize),
        }),
    })
}

/// Makes the output directory ready: created, locked against a second run
/// (the returned guard holds the lock until the stage's outputs are
/// written), writable (a read-only or unwritable directory fails now, not
/// after the first epoch), cleared of the temporaries of killed runs, and
/// with `restart`, of the checkpoint and log of earlier settings.
fn prepare_dir(dir: &Path, restart: bool) -> Result<atomic::DirLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TrainError::Format(tsimcne_format::FormatError::io(dir, e)))?;
    let lock = atomic::lock_dir(dir)?;
    atomic::check_writable_dir(dir)?;
    atomic::remove_stale_temps(dir, None);
    if restart {
        for f in [CHECKPOINT_FILE, LOG_FILE] {
            atomic::remove_durably(&dir.join(f))?;
        }
    }
    Ok(lock)
}

/// Writes a finished stage's outputs: its table (`write`), then the model,
/// then `config.json`, which marks a finished stage, so it goes last; and when the directory holds the `config.json`
/// of another run (other settings, `--restart`), that is removed durably
/// before anything is replaced.
///
/// **Invariant:** a directory with a `config.json` holds the outputs of the
/// run it describes, whatever moment a kill or a full disk interrupted it at.
fn write_outputs(
    dir: &Path,
    config: &ModelConfig,
    model: &Model,
    write: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let path = dir.join(MODEL_CONFIG_FILE);
    if path.exists() && ModelConfig::load(&path).ok().as_ref() != Some(config) {
        atomic::remove_durably(&path)?;
    }
    write()?;
    model.save(&dir.join(MODEL_FILE))?;
    config.save(&path)?;
    Ok(())
}

/// What a stage adds to its [`TrainOptions`] to plan its training: the
/// resolved learning rate, the 2-D stages' knobs, what it starts from and
/// which parameters train.
struct Plan<'a> {
    stage: &'a str,
    backbone: &'a str,
    normalize: &'a Option<Normalize>,
    lr: f64,
    /// 2-D stages: see [`TwoDConfig::map_scale`].
    map_scale: Option<f64>,
    /// Finetune: see [`TwoDConfig::freeze_layers`].
    freeze_layers: usize,
    /// The previous stage's directory.
    from: Option<String>,
    /// Project: how the output layer started.
    init: Option<String>,
    /// `None`: every parameter.
    trainable: Option<Vec<String>>,
    /// Ties the checkpoint to anything else the result depends on (the
    /// starting model).
    fingerprint_extra: String,
}

/// A one-line error unless the output dimension is positive.
fn check_out_dim(out_dim: usize) -> Result<()> {
    if out_dim == 0 {
        return Err(TrainError::Invalid(
            "the output dimension must be positive".into(),
        ));
    }
    Ok(())
}

/// A one-line error unless the weight decay is finite and not negative.
fn check_weight_decay(wd: f64) -> Result<()> {
    if wd.is_finite() && wd >= 0.0 {
        Ok(())
    } else {
        Err(TrainError::Invalid(format!(
            "the weight decay must be a finite number ≥ 0, got {wd}"
        )))
    }
}

/// A one-line error unless the map scale, if any, is finite and positive.
fn check_map_scale(scale: Option<f64>) -> Result<()> {
    match scale {
        Some(s) if !(s.is_finite() && s > 0.0) => Err(TrainError::Invalid(format!(
            "the map scale must be a finite number > 0, got {s}"
        ))),
        _ => Ok(()),
    }
}

/// A one-line error unless `--freeze-layers` is 0, or a finetune's and
/// within the backbone's stages.
fn check_freeze_layers(cfg: &TwoDConfig, arch: &tsimcne_model::ResNetArch) -> Result<()> {
    let stages = arch.widths.len();
    match cfg.freeze_layers {
        0 => Ok(()),
        _ if cfg.stage != TwoDStage::Finetune => Err(TrainError::Invalid(
            "frozen layers are for finetune (project trains the output layer alone)".into(),
        )),
        n if n > stages => Err(TrainError::Invalid(format!(
            "the backbone has {stages} stages; {n} cannot be frozen"
        ))),
        _ => Ok(()),
    }
}

/// `pretrain`: contrastive training with the 128-D head; writes
/// `model.safetensors`, `config.json`, `log.csv` and `features.parquet`.
pub fn pretrain(cfg: &PretrainConfig, obs: &dyn Observer) -> Result<StageSummary> {
    // A device that cannot be opened fails before any work.
    let device = cfg.train.device.open()?;
    let set = tsimcne_format::read_image_table(&cfg.images)?;
    let meta = set.meta.clone();
    let (h, w, c) = (
        meta.height as usize,
        meta.width as usize,
        meta.channels as usize,
    );
    check_out_dim(cfg.out_dim)?;
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
    let opts = &cfg.train;
    opts.check()?;
    let plan = Plan {
        stage: "pretrain",
        backbone: &cfg.backbone,
        normalize: &cfg.normalize,
        lr: opts.lr.unwrap_or_else(|| crate::base_lr(opts.batch_size)),
        map_scale: None,
        freeze_layers: 0,
        from: None,
        init: None,
        trainable: None,
        fingerprint_extra: String::new(),
    };
    let training = opts.record(&plan, &set);
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
    let _lock = prepare_dir(&cfg.out, opts.restart)?;
    let mut model = opts.prepare(Model::new(&arch, opts.seed, &device)?, &device)?;
    let images = Images::from_set(set);
    let positives = positives(&images, opts.augment, opts.threads, false, &cfg.normalize)?;
    let settings = opts.settings(plan, &training, positives);
    let augment = settings.augment.clone();
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
    write_outputs(&cfg.out, &config, &model, || {
        write_vectors(
            &cfg.out.join(FEATURES_FILE),
            KIND_FEATURES,
            &ids,
            &cols,
            &[],
        )
        .map_err(Into::into)
    })?;
    Ok(StageSummary {
        epochs,
        images: images.len,
        out: cfg.out.clone(),
    })
}

pub const EMBEDDING_FILE: &str = "embedding.parquet";

/// The two 2-D stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoDStage {
    /// Fresh output layer, trained alone.
    Project,
    /// Everything trained, at a thousandth of the learning rate.
    Finetune,
}

impl TwoDStage {
    pub fn name(self) -> &'static str {
        match self {
            TwoDStage::Project => "project",
            TwoDStage::Finetune => "finetune",
        }
    }

    /// The stage whose output this one starts from.
    pub fn from_stage(self) -> &'static str {
        match self {
            TwoDStage::Project => "pretrain",
            TwoDStage::Finetune => "project",
        }
    }

    /// The recipe's learning rate for a batch of `batch` images.
    pub fn default_lr(self, batch: usize) -> f64 {
        match self {
            TwoDStage::Project => crate::base_lr(batch),
            TwoDStage::Finetune => crate::base_lr(batch) / 1000.0,
        }
    }
}

/// The resolved settings of `project` or `finetune`.
#[derive(Clone, Debug)]
pub struct TwoDConfig {
    pub stage: TwoDStage,
    pub images: PathBuf,
    /// The previous stage's model directory.
    pub from: PathBuf,
    pub out: PathBuf,
    /// Project only: the map's dimension (finetune keeps its input's).
    pub out_dim: usize,
    /// Project only: how the new output layer starts.
    pub init: OutputInit,
    /// The loss sees each batch's map centred and at this root mean square
    /// coordinate (opt-in; `None`: the recipe, the output as it is). It
    /// keeps the map at the spread free 2-D points reach instead of letting
    /// the network shrink the loss by widening the gaps between clusters.
    pub map_scale: Option<f64>,
    /// Finetune only: the stem and the first `freeze_layers` stages of the
    /// backbone stay as `project` left them, their BatchNorm in eval mode
    /// (0: everything trains, the recipe). With views that are the image or
    /// its mirror image (`crop_min` 1, `jitter_p` 0), their output is
    /// computed once per image and flip.
    pub freeze_layers: usize,
    pub train: TrainOptions,
}

/// How `project` initialises the new low-dimensional output layer
/// (`--init`; a variant's first paragraph is its `--help` line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OutputInit {
    /// Weights N(0, 1), bias uniform in ±1/√hidden (the paper).
    #[default]
    Random,
    /// The previous outputs projected on their top principal components.
    ///
    /// The map starts as the PCA of the pretrained outputs.
    Pca,
}

impl OutputInit {
    pub fn name(self) -> &'static str {
        match self {
            OutputInit::Random => "random",
            OutputInit::Pca => "pca",
        }
    }
}

/// `project` or `finetune`: writes `model.safetensors`, `config.json`,
/// `log.csv` and `embedding.parquet` into `cfg.out`.
pub fn train_2d(cfg: &TwoDConfig, obs: &dyn Observer) -> Result<StageSummary> {
    let device = cfg.train.device.open()?;
    let (prev, prev_model, prev_bytes) = load_model_dir_on(&cfg.from, &device)?;
    if prev.stage != cfg.stage.from_stage() {
        return Err(TrainError::Invalid(format!(
            "{}: this is a {} model directory; {} starts from the output of {}",
            cfg.from.display(),
            prev.stage,
            cfg.stage.name(),
            cfg.stage.from_stage()
        )));
    }
    let opts = &cfg.train;
    opts.check()?;
    check_out_dim(cfg.out_dim)?;
    check_map_scale(cfg.map_scale)?;
    check_freeze_layers(cfg, &prev.arch)?;
    let set = tsimcne_format::read_image_table(&cfg.images)?;
    check_images(&cfg.images, &set, &prev.input)?;
    let model = match cfg.stage {
        TwoDStage::Project => match cfg.init {
            OutputInit::Random => prev_model.with_new_output(cfg.out_dim, opts.seed)?,
            OutputInit::Pca => {
                let (w, b) =
                    pca_output_layer(&prev_model, &cfg.from, &set, &prev.normalize, cfg.out_dim)?;
                prev_model.with_output(cfg.out_dim, w, b)?
            }
        },
        TwoDStage::Finetune => prev_model,
    };
    let init = (cfg.stage == TwoDStage::Project).then(|| cfg.init.name().to_string());
    let plan = Plan {
        stage: cfg.stage.name(),
        backbone: &prev.training.backbone,
        normalize: &prev.normalize,
        lr: opts
            .lr
            .unwrap_or_else(|| cfg.stage.default_lr(opts.batch_size)),
        map_scale: cfg.map_scale,
        freeze_layers: cfg.freeze_layers,
        from: Some(cfg.from.display().to_string()),
        trainable: match cfg.stage {
            TwoDStage::Project => Some(vec![format!(
                "{}.{}",
                tsimcne_format::model_keys::HEAD,
                tsimcne_format::model_keys::HEAD_OUT
            )]),
            TwoDStage::Finetune => None,
        },
        fingerprint_extra: format!(" from {} init {init:?}", fnv1a(&prev_bytes)),
        init,
    };
    let training = opts.record(&plan, &set);
    let config = ModelConfig {
        format_version: MODEL_CONFIG_VERSION,
        stage: cfg.stage.name().into(),
        arch: model.arch.clone(),
        input: prev.input.clone(),
        normalize: prev.normalize.clone(),
        training: training.clone(),
    };
    let _lock = prepare_dir(&cfg.out, opts.restart)?;
    let mut model = opts.prepare(model, &device)?;
    let images = Images::from_set(set.clone());
    let positives = positives(&images, opts.augment, opts.threads, true, &config.normalize)?;
    let settings = opts.settings(plan, &training, positives);
    let epochs = train(&mut model, &images, &settings, &cfg.out, obs)?;
    write_outputs(&cfg.out, &config, &model, || {
        write_model_embedding(&model, &config, &set, &cfg.out.join(EMBEDDING_FILE))
    })?;
    Ok(StageSummary {
        epochs,
        images: images.len,
        out: cfg.out.clone(),
    })
}
