//! `explore`'s flags.

use std::path::PathBuf;

use clap::Parser;
use tsimcne_explore::{DEFAULT_NEIGHBOURS, ExploreConfig, FeatureSpec, SINGLE_FILE_MAX_BYTES};

use crate::default_threads;
use crate::flags::MapArgs;

/// Write an interactive map of the images (the embedding's first two
/// coordinates): DIR/map.html, one file that opens
/// in a browser from disk with no server and no network. Pan and zoom, see
/// each point's image and its nearest neighbours on hover, click to pin an
/// image and step through its neighbours; zoomed in, the points become their
/// thumbnails.
#[derive(Debug, Parser)]
#[command(name = "explore", version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    map: MapArgs,
    /// Also list each image's nearest neighbours in this space: FILE:COLUMN,
    /// such as pretrain/features.parquet:backbone.
    #[arg(long, value_name = "FILE:COLUMN")]
    features: Option<String>,
    /// A metrics.json from evaluate, shown beside the legend.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Nearest neighbours listed per image.
    #[arg(long, default_value_t = DEFAULT_NEIGHBOURS)]
    neighbours: usize,
    /// The page's title [default: the embedding's folder and file name].
    #[arg(long)]
    title: Option<String>,
    /// Seed of the order points are drawn in.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Above this many MiB, the thumbnails go into files beside map.html
    /// (map-data/): copy the folder, not the file alone.
    #[arg(long, value_name = "MIB", default_value_t = SINGLE_FILE_MAX_BYTES >> 20)]
    max_single_file: usize,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Output directory (created if missing): map.html is written there,
    /// atomically.
    #[arg(long)]
    pub out: PathBuf,
}

impl Args {
    /// The library's config, checked.
    pub fn config(&self) -> anyhow::Result<ExploreConfig> {
        Ok(ExploreConfig {
            embedding: self.map.embedding.clone(),
            embedding_column: self.map.column.clone(),
            images: self.map.images.clone(),
            features: self
                .features
                .as_deref()
                .map(FeatureSpec::parse)
                .transpose()?,
            metrics: self.metrics.clone(),
            neighbours: self.neighbours,
            seed: self.seed,
            threads: self.threads.unwrap_or_else(default_threads).max(1),
            title: self.title.clone(),
            single_file_max_bytes: self.max_single_file.saturating_mul(1 << 20),
        })
    }
}
