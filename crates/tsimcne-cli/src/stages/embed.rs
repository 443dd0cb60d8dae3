//! `embed`: place the images of any image table with a trained model.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{default_threads, run_main, set_compute_threads};
use clap::Parser;
use tsimcne_model::DeviceSpec;

/// Embed images with a trained model: the map is parametric, so any model
/// directory (pretrain, project or finetune) places images it never saw.
/// Writes an embedding table (id, label, x, y[, z], or an `embedding` vector
/// column for more than 3 dimensions).
#[derive(Debug, Parser)]
#[command(name = "embed", version, about, long_about)]
struct Args {
    /// A model directory (model.safetensors and config.json), or a bare
    /// .safetensors file with the reference PyTorch names (e.g. exported
    /// from the reference), whose architecture is read off its shapes.
    #[arg(long)]
    model: PathBuf,
    /// An image table (from prep) of the model's image size and channels.
    #[arg(long)]
    images: PathBuf,
    /// The embedding table to write (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Compute threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Where to run the network: cpu, cuda (the first GPU) or cuda:N; a GPU
    /// needs the CUDA build (scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    set_compute_threads(args.threads.unwrap_or_else(default_threads).max(1));
    run_main(|| {
        let n = tsimcne_train::embed::embed(&args.model, &args.images, &args.out, args.device)?;
        eprintln!("wrote {}: {n} images", args.out.display());
        Ok(())
    })
}
