//! The `evaluate` stage: an [`evaluate()`] run written out as `metrics.json`,
//! and the map drawn as `map.png` and `map.svg`, into one folder.

use std::path::{Path, PathBuf};

use tsimcne_format::atomic::{check_writable_dir, write_bytes_atomic};

use crate::error::{EvalError, Result};
use crate::evaluate::{EvalConfig, Evaluation, evaluate};

/// The stage's settings: the evaluation, where its files go, and the map.
#[derive(Clone, Debug)]
pub struct StageConfig {
    pub eval: EvalConfig,
    /// The output folder (created when there is something to write).
    pub out: PathBuf,
    /// `None`: no map.png and map.svg.
    pub picture: Option<Picture>,
}

/// How the map is drawn: the first two coordinates, coloured by label.
#[derive(Clone, Copy, Debug, Default)]
pub struct Picture {
    /// Image thumbnails drawn at a seeded sample of points (the
    /// evaluation's seed).
    pub thumbnails: usize,
}

/// What the stage did.
#[derive(Debug)]
pub struct StageReport {
    pub evaluation: Evaluation,
    pub metrics_file: PathBuf,
    pub picture: Drawn,
}

/// Whether the map was drawn.
#[derive(Debug)]
pub enum Drawn {
    /// `map.png` and `map.svg`.
    Files { png: PathBuf, svg: PathBuf },
    /// No picture was asked for.
    NotAsked,
    /// A map of fewer than two dimensions has no picture.
    TooFewDimensions(usize),
}

/// Runs the stage. An output folder that cannot be written fails before
/// the work; every file is written atomically.
pub fn run(cfg: &StageConfig) -> Result<StageReport> {
    let existing = cfg
        .out
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("."));
    check_writable_dir(existing)?;
    let evaluation = evaluate(&cfg.eval)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| {
        EvalError::Invalid(format!(
            "{}: cannot create the folder: {e}",
            cfg.out.display()
        ))
    })?;
    let metrics_file = cfg.out.join("metrics.json");
    let mut json = serde_json::to_string_pretty(&evaluation.metrics)
        .map_err(|e| EvalError::Invalid(format!("encoding the metrics: {e}")))?;
    json.push('\n');
    write_bytes_atomic(&metrics_file, json.as_bytes())?;
    let picture = match cfg.picture {
        None => Drawn::NotAsked,
        Some(p) => draw(cfg, p, &evaluation)?,
    };
    Ok(StageReport {
        evaluation,
        metrics_file,
        picture,
    })
}

/// map.png and map.svg: the first two coordinates, coloured by label.
fn draw(cfg: &StageConfig, picture: Picture, eval: &Evaluation) -> Result<Drawn> {
    let m = &eval.metrics;
    if m.dim < 2 {
        return Ok(Drawn::TooFewDimensions(m.dim));
    }
    // [n, dim] → [n, 2]
    let points: Vec<[f32; 2]> = eval.coords.chunks(m.dim).map(|c| [c[0], c[1]]).collect();
    let labels: Vec<Option<u32>> = eval
        .labels
        .iter()
        .map(|l| l.and_then(|v| u32::try_from(v).ok()))
        .collect();
    let seed = cfg.eval.seed;
    let mut images = eval.images.clone();
    let thumbnails = if picture.thumbnails > 0 {
        if images.pixels.is_empty() {
            images = tsimcne_format::read_image_table(&cfg.eval.images)?;
        }
        let (h, w, c) = (
            images.meta.height as usize,
            images.meta.width as usize,
            images.meta.channels as usize,
        );
        crate::split::sample(points.len(), picture.thumbnails, seed ^ 0x7468756d)
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
    let stage = Path::new(&m.embedding)
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
        seed,
        ..Default::default()
    };
    let plot_error =
        |e: tsimcne_plot::PlotError| EvalError::Invalid(format!("drawing the map: {e}"));
    let png = tsimcne_plot::render_png(&map, &style).map_err(plot_error)?;
    let svg = tsimcne_plot::render_svg(&map, &style).map_err(plot_error)?;
    let (png_path, svg_path) = (cfg.out.join("map.png"), cfg.out.join("map.svg"));
    write_bytes_atomic(&png_path, &png)?;
    write_bytes_atomic(&svg_path, svg.as_bytes())?;
    Ok(Drawn::Files {
        png: png_path,
        svg: svg_path,
    })
}
