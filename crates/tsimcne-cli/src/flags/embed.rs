//! `embed`'s flags.

use std::path::PathBuf;

use clap::Parser;
use tsimcne_model::DeviceSpec;

use crate::default_threads;

/// Embed images with a trained model: the map is parametric, so any model
/// directory (pretrain, project or finetune) places images it never saw.
/// Writes an embedding table (id, label, x, y[, z], or an `embedding` vector
/// column for more than 3 dimensions).
#[derive(Debug, Parser)]
#[command(name = "embed", version, about, long_about)]
pub struct Args {
    /// A model directory (model.safetensors and config.json), or a bare
    /// .safetensors file with the reference PyTorch names (e.g. exported
    /// from the reference), whose architecture is read off its shapes.
    #[arg(long)]
    pub model: PathBuf,
    /// An image table (from prep) of the model's image size and channels.
    #[arg(long)]
    pub images: PathBuf,
    /// The embedding table to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Compute threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to run the network: cpu, cuda (the first GPU) or cuda:N; a GPU
    /// needs the CUDA build (scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

impl Args {
    /// `--threads`, or all cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads).max(1)
    }
}
