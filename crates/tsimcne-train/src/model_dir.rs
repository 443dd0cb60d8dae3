//! Model directories and bare model files: loading a stage's output
//! (`config.json` with `model.safetensors`, checked against each other) or
//! a `.safetensors` file with the reference names, and the checks that tie
//! a model to its images and to the runs that start from it.

use std::path::Path;

use candle_core::Device;
use tsimcne_format::model_config::{
    InputShape, MODEL_CONFIG_FILE, MODEL_CONFIG_VERSION, MODEL_FILE, ModelConfig, TrainingConfig,
};
use tsimcne_model::Model;

use crate::checkpoint::CHECKPOINT_FILE;
use crate::error::{Result, TrainError};

/// The stand-in config of a bare model file: stage `exported`, no training.
pub(crate) fn exported_config(arch: tsimcne_model::ResNetArch, input: InputShape) -> ModelConfig {
    ModelConfig {
        format_version: MODEL_CONFIG_VERSION,
        stage: "exported".into(),
        arch,
        input,
        normalize: None,
        training: TrainingConfig {
            backbone: "exported".into(),
            epochs: 0,
            batch_size: 0,
            lr: 0.0,
            warmup: 0,
            seed: 0,
            loss: String::new(),
            momentum: 0.0,
            weight_decay: 0.0,
            clip_value: None,
            images_checksum: String::new(),
            images_rows: 0,
            from: None,
            threads: 0,
            checkpoint_every: 0,
            init: None,
            augment: None,
            map_scale: None,
            freeze_layers: 0,
            device: None,
            conv_math: None,
            gpu_path: None,
        },
    }
}

/// FNV-1a of a file's bytes: ties a checkpoint to the exact model it
/// started from.
pub(crate) fn fnv1a(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("fnv1a:{h:016x}")
}

/// A model directory: its config and model (on the CPU), checked against
/// each other.
pub fn load_model_dir(dir: &Path) -> Result<(ModelConfig, Model, Vec<u8>)> {
    load_model_dir_on(dir, &Device::Cpu)
}

/// [`load_model_dir`] with the model on `device`.
pub fn load_model_dir_on(dir: &Path, device: &Device) -> Result<(ModelConfig, Model, Vec<u8>)> {
    let config_path = dir.join(MODEL_CONFIG_FILE);
    if !config_path.exists() && dir.join(CHECKPOINT_FILE).exists() {
        return Err(TrainError::Invalid(format!(
            "{}: no {MODEL_CONFIG_FILE}: the stage that writes this directory has not finished (rerun it to resume)",
            dir.display()
        )));
    }
    let config = ModelConfig::load(&config_path)?;
    let path = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| TrainError::Format(tsimcne_format::FormatError::io(path.clone(), e)))?;
    let model = Model::load_bytes(&path, &bytes, &config.arch, device)?;
    Ok((config, model, bytes))
}

/// A bare safetensors model file with the reference names (no
/// `config.json`): its architecture is read off the tensor shapes and
/// checked like a config's before the model is built. The model is on the CPU.
pub fn load_model_file(path: &Path) -> Result<Model> {
    load_model_file_on(path, &Device::Cpu)
}

/// [`load_model_file`] with the model on `device`.
pub fn load_model_file_on(path: &Path, device: &Device) -> Result<Model> {
    let bytes = std::fs::read(path)
        .map_err(|e| TrainError::Format(tsimcne_format::FormatError::io(path, e)))?;
    let arch = tsimcne_model::infer_arch(path, &bytes)?;
    arch.check()
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Model::load_bytes(path, &bytes, &arch, device)?)
}

/// Checks that an image table fits a model's input.
pub(crate) fn check_images(
    images: &Path,
    set: &tsimcne_format::ImageSet,
    input: &InputShape,
) -> Result<()> {
    let m = &set.meta;
    let got = (m.height as usize, m.width as usize, m.channels as usize);
    if got != (input.height, input.width, input.channels) {
        return Err(TrainError::Invalid(format!(
            "{}: images are {}x{}x{}, the model takes {}x{}x{}",
            images.display(),
            got.0,
            got.1,
            got.2,
            input.height,
            input.width,
            input.channels
        )));
    }
    Ok(())
}
