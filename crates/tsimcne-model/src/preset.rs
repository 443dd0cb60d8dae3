//! Named architectures.

use tsimcne_format::model_keys::ResNetArch;

use crate::error::{ModelError, Result};

/// The presets, by name, for `--backbone`.
pub const PRESETS: [&str; 3] = ["resnet18", "small", "tiny"];

/// The architecture of a preset for `in_channels` input channels and an
/// `out_dim`-dimensional output.
///
/// - `resnet18`: the paper's CIFAR ResNet18 (widths 64–512, 2 blocks per
///   stage) with the 512→1024→`out_dim` head; 11.2 M backbone parameters.
/// - `small`: widths 16–128, one block per stage, head 128→1024→`out_dim`;
///   the CPU preset (about 1/60 of ResNet18's multiply-adds).
/// - `tiny`: widths 4–16, one block per stage, head 16→32→`out_dim`; for tests.
pub fn preset(name: &str, in_channels: usize, out_dim: usize) -> Result<ResNetArch> {
    let (widths, blocks, head_hidden) = match name {
        "resnet18" => (vec![64, 128, 256, 512], vec![2, 2, 2, 2], 1024),
        "small" => (vec![16, 32, 64, 128], vec![1, 1, 1, 1], 1024),
        "tiny" => (vec![4, 8, 8, 16], vec![1, 1, 1, 1], 32),
        other => return Err(ModelError::UnknownPreset(other.to_string())),
    };
    Ok(ResNetArch {
        in_channels,
        widths,
        blocks,
        head_hidden,
        out_dim,
    })
}

/// Checks that an architecture can take `height`×`width` images: every
/// stride-2 stage needs at least one pixel left, and the stem needs 8×8
/// (below that the map degenerates to almost nothing).
pub fn check_input(arch: &ResNetArch, channels: usize, height: usize, width: usize) -> Result<()> {
    if channels != arch.in_channels {
        return Err(ModelError::Invalid(format!(
            "the images have {channels} channels, the model takes {}",
            arch.in_channels
        )));
    }
    if height < 8 || width < 8 {
        return Err(ModelError::Invalid(format!(
            "images of {height}x{width} are too small: the backbone needs at least 8x8"
        )));
    }
    Ok(())
}
