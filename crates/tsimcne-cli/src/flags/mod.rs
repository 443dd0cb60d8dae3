//! What a user types: every stage's flags, each with its help and default
//! written once, and their lowering into the library's config, built and
//! checked once here (ripgrep's low-level → high-level arguments). The
//! stages in [`crate::stages`] only parse, call the library and report.

pub mod embed;
pub mod estimate;
pub mod evaluate;
pub mod explore;
pub mod prep;
pub mod pretrain;
pub mod train;
pub mod two_d;

use std::path::PathBuf;

/// The map and its images, as `evaluate` and `explore` read them.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// The map: any Parquet table with `id` and coordinates (`x`, `y`, …
    /// columns or one vector column), e.g. finetune/embedding.parquet, or a
    /// t-SNE or UMAP table.
    #[arg(long)]
    pub embedding: PathBuf,
    /// The embedding's vector column, if the table has several.
    #[arg(long)]
    pub column: Option<String>,
    /// The image table (from prep) the labels (and explore's thumbnails,
    /// splits and file names) come from, joined on `id`.
    #[arg(long)]
    pub images: PathBuf,
}
