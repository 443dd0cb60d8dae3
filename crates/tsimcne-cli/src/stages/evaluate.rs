//! `evaluate`: kNN accuracy, neighbour preservation and a picture of a map.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{default_threads, run_main};
use anyhow::Context;
use clap::Parser;
use tsimcne_eval::{EvalConfig, Reference};
use tsimcne_format::atomic::write_bytes_atomic;

/// Evaluate an embedding: kNN accuracy (k = 15, scikit-learn's majority
/// vote) on the dataset's train→test split and on the paper's repeated
/// stratified hold-out, neighbour preservation (kNN recall) against
/// high-dimensional references, and a picture of the map. Writes
/// metrics.json, map.png and map.svg into --out.
#[derive(Debug, Parser)]
#[command(name = "evaluate", version, about, long_about)]
struct Args {
    /// The embedding: any Parquet table with `id` and coordinates (`x`, `y`,
    /// … columns or one vector column), e.g. finetune/embedding.parquet.
    #[arg(long)]
    embedding: PathBuf,
    /// The embedding's vector column, if the table has several.
    #[arg(long)]
    column: Option<String>,
    /// The image table (from prep) the labels come from, joined on `id`.
    #[arg(long)]
    images: PathBuf,
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

/// The stage's `main`: `argv` is its command line, its name first.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(argv);
    run_main(|| {
        let references = args
            .references
            .iter()
            .map(|s| Reference::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        // A read-only or unwritable folder fails now, not after the work;
        // the folder itself is made only when there is something to write.
        let existing = args
            .out
            .ancestors()
            .find(|a| a.is_dir())
            .unwrap_or(Path::new("."));
        tsimcne_format::atomic::check_writable_dir(existing)?;
        let cfg = EvalConfig {
            embedding: args.embedding.clone(),
            embedding_column: args.column.clone(),
            images: args.images.clone(),
            references,
            k: args.k,
            repeats: args.repeats,
            test_size: args.test_size,
            sample: args.sample,
            seed: args.seed,
            reference_knn: args.reference_knn,
            threads: args.threads.unwrap_or_else(default_threads).max(1),
        };
        let eval = tsimcne_eval::evaluate(&cfg)?;
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let m = &eval.metrics;
        let metrics_path = args.out.join("metrics.json");
        let mut json = serde_json::to_string_pretty(m).context("encoding metrics")?;
        json.push('\n');
        write_bytes_atomic(&metrics_path, json.as_bytes())?;

        println!("{}", tsimcne_eval::summary(m));
        eprintln!("wrote {}", metrics_path.display());
        if !args.no_plot {
            draw(&args, &eval)?;
        }
        Ok(())
    })
}

/// map.png and map.svg: the first two coordinates, coloured by label.
fn draw(args: &Args, eval: &tsimcne_eval::Evaluation) -> anyhow::Result<()> {
    let m = &eval.metrics;
    if m.dim < 2 {
        eprintln!("a {}-D embedding is not drawn", m.dim);
        return Ok(());
    }
    let points: Vec<[f32; 2]> = eval.coords.chunks(m.dim).map(|c| [c[0], c[1]]).collect();
    let labels: Vec<Option<u32>> = eval
        .labels
        .iter()
        .map(|l| l.and_then(|v| u32::try_from(v).ok()))
        .collect();
    let mut images = eval.images.clone();
    let thumbnails = if args.thumbnails > 0 {
        if images.pixels.is_empty() {
            images = tsimcne_format::read_image_table(&args.images)?;
        }
        let h = images.meta.height as usize;
        let w = images.meta.width as usize;
        let c = images.meta.channels as usize;
        tsimcne_eval::split::sample(points.len(), args.thumbnails, args.seed ^ 0x7468756d)
            .into_iter()
            .map(|i| tsimcne_plot::Thumbnail {
                point: i as usize,
                height: h,
                width: w,
                channels: c,
                pixels: images.image(i as usize).to_vec(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let stage = std::path::Path::new(&m.embedding)
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned());
    let mut title = format!("{} points", m.n_points);
    if let Some(s) = stage {
        title = format!("{s} · {title}");
    }
    if let Some(a) = &m.knn_accuracy {
        title.push_str(&format!(" · kNN@{} {:.3}", m.k, a.holdout.mean));
    }
    let map = tsimcne_plot::Map {
        points: &points,
        labels: &labels,
        class_names: &images.meta.class_names,
        title: Some(&title),
        thumbnails: &thumbnails,
    };
    let style = tsimcne_plot::Style {
        seed: args.seed,
        ..Default::default()
    };
    let png = tsimcne_plot::render_png(&map, &style)?;
    let svg = tsimcne_plot::render_svg(&map, &style)?;
    let png_path = args.out.join("map.png");
    let svg_path = args.out.join("map.svg");
    write_bytes_atomic(&png_path, &png)?;
    write_bytes_atomic(&svg_path, svg.as_bytes())?;
    eprintln!("wrote {} and {}", png_path.display(), svg_path.display());
    Ok(())
}
