//! `embed`: a trained model's map of any image table, and the embedding
//! table every 2-D stage writes.

use std::path::Path;

use tsimcne_format::model_config::{InputShape, ModelConfig};
use tsimcne_model::{DeviceSpec, Model, check_input};

use crate::error::{Result, TrainError};
use crate::model_dir::{check_images, exported_config, load_model_dir_on, load_model_file_on};
use crate::stage::augment_config;
use crate::trainer::{Images, embed_all};

/// Images per forward pass when embedding (no effect on the result).
const EMBED_BATCH: usize = 512;

/// Embeds every image of `set` with `model` and writes the embedding table.
pub fn write_model_embedding(
    model: &Model,
    config: &ModelConfig,
    set: &tsimcne_format::ImageSet,
    path: &Path,
) -> Result<()> {
    let labels = set.labels.clone();
    let images = Images::from_set(set.clone());
    let (_, coords) = embed_all(
        model,
        &images,
        &augment_config(&config.normalize),
        EMBED_BATCH,
    )?;
    let ids: Vec<u32> = (0..images.len as u32).collect();
    let extra = [("tsimcne.stage".to_string(), config.stage.clone())];
    tsimcne_format::vectors::write_embedding(
        path,
        &ids,
        &labels,
        model.arch.out_dim,
        &coords,
        &extra,
    )?;
    Ok(())
}

/// `embed`: places the images of any image table with a trained model:
/// any stage's directory, or a bare `.safetensors` file with the reference
/// names (e.g. exported from PyTorch), whose architecture is read off its
/// tensor shapes and which takes images in [0, 1] of any size. The forward
/// passes run on `device`. Returns the number of images.
pub fn embed(model: &Path, images: &Path, out: &Path, device: DeviceSpec) -> Result<usize> {
    let device = device.open()?;
    tsimcne_format::atomic::check_output_path(out)?;
    let set = tsimcne_format::read_image_table(images)?;
    let (config, model) = if model.is_dir() {
        let (config, model, _) = load_model_dir_on(model, &device)?;
        (config, model)
    } else {
        let m = load_model_file_on(model, &device)?;
        let arch = m.arch.clone();
        let input = InputShape {
            height: set.meta.height as usize,
            width: set.meta.width as usize,
            channels: arch.in_channels,
        };
        check_input(&arch, set.meta.channels as usize, input.height, input.width)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", images.display())))?;
        (exported_config(arch.clone(), input), m)
    };
    check_images(images, &set, &config.input)?;
    write_model_embedding(&model, &config, &set, out)?;
    Ok(set.len())
}
