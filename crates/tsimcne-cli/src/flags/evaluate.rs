//! `evaluate`'s flags.

use std::path::PathBuf;

use clap::Parser;
use tsimcne_eval::stage::{Picture, StageConfig};
use tsimcne_eval::{EvalConfig, Reference};

use crate::default_threads;
use crate::flags::MapArgs;

/// Evaluate an embedding: kNN accuracy (k = 15, scikit-learn's majority
/// vote) on the dataset's train→test split and on the paper's repeated
/// stratified hold-out, neighbour preservation (kNN recall) against
/// high-dimensional references, and a picture of the map. Writes
/// metrics.json, map.png and map.svg into --out.
#[derive(Debug, Parser)]
#[command(name = "evaluate", version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    map: MapArgs,
    /// A high-dimensional reference for neighbour preservation: `pixels`,
    /// or `FILE:COLUMN` such as pretrain/features.parquet:head, optionally
    /// named `NAME=SPEC`. Repeatable.
    #[arg(long = "reference", value_name = "SPEC")]
    references: Vec<String>,
    /// Neighbours.
    #[arg(long, default_value_t = 15)]
    k: usize,
    /// Seeded stratified hold-out splits.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Hold-out size [default: 10000, or 20% of a smaller dataset].
    #[arg(long)]
    test_size: Option<usize>,
    /// Query points for neighbour preservation (their neighbours are still
    /// searched among all points) [default: all].
    #[arg(long)]
    sample: Option<usize>,
    /// Seed of the hold-out splits, the sample and the picture.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also report kNN accuracy in each reference space (the upper bound).
    #[arg(long)]
    reference_knn: bool,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Do not draw map.png and map.svg.
    #[arg(long)]
    no_plot: bool,
    /// Image thumbnails drawn on the map at a seeded sample of points.
    #[arg(long, default_value_t = 0)]
    thumbnails: usize,
    /// Threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

impl Args {
    /// The library's config, checked.
    pub fn config(self) -> anyhow::Result<StageConfig> {
        let references = self
            .references
            .iter()
            .map(|s| Reference::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StageConfig {
            eval: EvalConfig {
                embedding: self.map.embedding,
                embedding_column: self.map.column,
                images: self.map.images,
                references,
                k: self.k,
                repeats: self.repeats,
                test_size: self.test_size,
                sample: self.sample,
                seed: self.seed,
                reference_knn: self.reference_knn,
                threads: self.threads.unwrap_or_else(default_threads).max(1),
            },
            out: self.out,
            picture: (!self.no_plot).then_some(Picture {
                thumbnails: self.thumbnails,
            }),
        })
    }
}
