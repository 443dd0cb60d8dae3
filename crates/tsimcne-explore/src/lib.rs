//! `explore`: an interactive map of an image collection, in one HTML file
//! that opens from `file://` with no server, no network and no CDN.
//!
//! Everything costly happens here, in Rust: the thumbnails are packed into
//! PNG sheets ([`sheets`]), every point's nearest neighbours are found with
//! `tsimcne-eval`'s exact search (in the map, and in a feature space when
//! one is given), and the draw order is shuffled once with a seed. The page
//! (`src/page/`, compiled into the binary) only decodes and draws: the
//! points through WebGL2 on a GPU, else on a 2-D canvas (also where WebGL2
//! is software, which is slower; or draws nothing, which it checks first),
//! so it needs no GPU and never shows a blank canvas.
//!
//! Every string that reaches the page (class names and file names come from
//! the user's folders and archives) travels inside one JSON block whose `<`,
//! `>` and `&` are escaped, and the page only ever puts text into the
//! document as text ([`page`]).

mod layout;
mod page;
mod sheets;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;
use tsimcne_eval::Data;
use tsimcne_format::{ImageSet, ImageTableReader};
use tsimcne_rng::SplitMix64;

/// Why a page could not be made. Each message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error(transparent)]
    Format(#[from] tsimcne_format::FormatError),
    #[error(transparent)]
    Eval(#[from] tsimcne_eval::EvalError),
    /// Inputs that are readable but unusable, or do not fit together.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ExploreError> = std::result::Result<T, E>;

/// A feature table to find neighbours in: `FILE:COLUMN`, such as
/// `pretrain/features.parquet:backbone`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    pub path: PathBuf,
    pub column: String,
}

impl FeatureSpec {
    /// Parses `FILE:COLUMN` (split at the last `:`).
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.rsplit_once(':') {
            Some((path, column)) if !path.is_empty() && !column.is_empty() => Ok(Self {
                path: PathBuf::from(path),
                column: column.to_string(),
            }),
            _ => Err(ExploreError::Invalid(format!(
                "--features {spec:?}: expected FILE:COLUMN, such as pretrain/features.parquet:backbone"
            ))),
        }
    }
}

/// What a page is made of. Built once by the stage's command line.
#[derive(Clone, Debug)]
pub struct ExploreConfig {
    /// The map: any table `evaluate` accepts (`id` and `x`, `y` … or one
    /// vector column); its first two coordinates are drawn.
    pub embedding: PathBuf,
    /// The embedding's vector column, if the table has several.
    pub embedding_column: Option<String>,
    /// The image table (from `prep`): thumbnails, labels, splits, paths.
    pub images: PathBuf,
    /// A second space to list each image's nearest neighbours in.
    pub features: Option<FeatureSpec>,
    /// A `metrics.json` from `evaluate`, shown beside the legend.
    pub metrics: Option<PathBuf>,
    /// Neighbours listed per image (in the map, and in `features`).
    pub neighbours: usize,
    /// Seed of the draw order.
    pub seed: u64,
    /// Threads for the neighbour search.
    pub threads: usize,
    /// The page's title; `None`: from the embedding's folder name.
    pub title: Option<String>,
    /// Above this many bytes the thumbnail sheets go into files beside
    /// `map.html` (`map-data/`) instead of into it.
    pub single_file_max_bytes: usize,
}

/// The size above which one HTML file stops being sensible: the sheets
/// then go beside it.
pub const SINGLE_FILE_MAX_BYTES: usize = 100 << 20;

/// The folder beside `map.html` that holds the sheets of a large page.
pub const DATA_DIR: &str = "map-data";

/// Neighbours listed per image by default.
pub const DEFAULT_NEIGHBOURS: usize = 8;

/// The largest `metrics.json` read.
const MAX_METRICS_BYTES: u64 = 1 << 20;

/// A page, ready to be written: `map.html`, and for a large one the sheets
/// as scripts beside it (classic scripts load from `file://`, where `fetch`
/// and module scripts are refused; data URLs inside them keep the canvas
/// untainted, so the page can still read its pixels and export them).
#[derive(Debug)]
pub struct Page {
    /// ASCII but for the sheets' block (the page is windows-1252).
    html: Vec<u8>,
    /// `(name, content)` of each file in [`DATA_DIR`].
    files: Vec<(String, String)>,
    /// Points on the map.
    pub points: usize,
    /// Thumbnail sheets.
    pub sheets: usize,
}

impl Page {
    /// The page's HTML, in windows-1252.
    pub fn html(&self) -> &[u8] {
        &self.html
    }

    /// Bytes written in all: `map.html` and the files beside it.
    pub fn bytes(&self) -> usize {
        self.html.len() + self.files.iter().map(|f| f.1.len()).sum::<usize>()
    }

    /// Files beside `map.html` (0 for a single-file page).
    pub fn data_files(&self) -> usize {
        self.files.len()
    }

    /// Writes `dir/map.html` (making `dir` if missing) and returns its path.
    /// The sheet files go first, under names that hold a hash of their
    /// content, and `map.html` last, atomically: until then an earlier page
    /// and its files stay whole. Files of `map-data/` that the new page does
    /// not use are removed after.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let cannot = |what: &Path, e: std::io::Error| {
            ExploreError::Invalid(format!("{}: cannot create the folder: {e}", what.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| cannot(dir, e))?;
        let data = dir.join(DATA_DIR);
        if !self.files.is_empty() {
            std::fs::create_dir_all(&data).map_err(|e| cannot(&data, e))?;
        }
        for (name, content) in &self.files {
            let path = data.join(name);
            if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
                tsimcne_format::atomic::write_bytes_atomic(&path, content.as_bytes())?;
            }
        }
        let path = dir.join("map.html");
        tsimcne_format::atomic::write_bytes_atomic(&path, &self.html)?;
        if let Ok(entries) = std::fs::read_dir(&data) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("sheet-") && !self.files.iter().any(|f| f.0 == name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(&data); // only if empty
        }
        Ok(path)
    }
}

/// One list of nearest neighbours per image, in some space.
#[derive(Debug, Serialize)]
struct NeighbourSet {
    /// What the page calls the space ("map", or the feature column).
    name: String,
    k: usize,
    /// `n · k` little-endian u32 row indices, base64.
    data: String,
}

/// The JSON block the page reads. Arrays of numbers travel as base64 of
/// their little-endian bytes: a fraction of the size of JSON numbers, and
/// decoded without parsing.
#[derive(Debug, Serialize)]
struct PageData<'a> {
    version: u32,
    title: String,
    n: usize,
    image: ImageShape,
    class_names: &'a [String],
    /// `#rrggbb` per class, the colours of `evaluate`'s map.png.
    colours: Vec<String>,
    unlabelled_colour: String,
    /// Split names; `split` holds indices into it.
    splits: Vec<&'static str>,
    /// Each image's file, relative to `prep --input` (folder tables only).
    paths: Option<Vec<&'a str>>,
    metrics: Option<serde_json::Value>,
    /// `[n, 2]` f32: the first two coordinates.
    coords: String,
    /// `[n]` i32, -1 where unlabelled.
    labels: String,
    /// `[n]` u8, an index into `splits`.
    split: String,
    /// `[n]` u32: a seeded shuffle, the order points are drawn in.
    order: String,
    /// The median distance from a point to its nearest neighbour in the map:
    /// the page's unit for thumbnail sizes.
    spacing: f32,
    neighbours: Vec<NeighbourSet>,
    sheets: SheetsData,
    /// `[n]` u8, base64: the rank of each point's density (1 / the
    /// distance to its k-th map neighbour) scaled to 0–254.
    density: String,
    /// `[n]` u8, base64: the share of a point's labelled map neighbours
    /// with another label, scaled to 0–254; 255 where the point or all its
    /// neighbours are unlabelled.
    disagreement: String,
    /// Thumbnails at the density peaks, by zoom level.
    representatives: RepresentativesData,
    /// `[point, class, level]` per class name on the map, in the order the
    /// page places them: each class at its medoid (level 0), then its
    /// islands at finer levels (an index into `representatives.radii`).
    class_labels: Vec<[u32; 3]>,
}

#[derive(Debug, Serialize)]
struct RepresentativesData {
    /// Map distance between representatives, per level.
    radii: Vec<f32>,
    /// u32 point indices, base64, densest first within each level.
    ids: String,
    /// u8 level of each, base64.
    levels: String,
}

#[derive(Debug, Serialize)]
struct ImageShape {
    height: usize,
    width: usize,
    channels: usize,
}

#[derive(Debug, Serialize)]
struct SheetsData {
    /// Thumbnails per sheet row.
    columns: usize,
    /// Thumbnails per sheet: image `i` is tile `i % per_sheet` of sheet
    /// `i / per_sheet`, row-major.
    per_sheet: usize,
    /// Sheets in all.
    count: usize,
    /// Each sheet's PNG bytes, one after the other in the page's own block
    /// after the code (`#tsimcne-sheets`); empty when they are in `files`.
    lengths: Vec<usize>,
    /// Scripts beside the page, relative to it, one per sheet: each calls
    /// `tsimcneSheet(index, url)` with a `data:image/png;base64,…` URL.
    files: Vec<String>,
}

/// Builds the page: reads and checks every input, finds the neighbours and
/// packs the thumbnails. Nothing is written.
pub fn build(cfg: &ExploreConfig) -> Result<Page> {
    let images = ImageTableReader::open(&cfg.images)?.read_all()?;
    let n = images.len();
    if n == 0 {
        return Err(ExploreError::Invalid(format!(
            "{}: the image table has no rows",
            cfg.images.display()
        )));
    }
    let joined = format!("the image table {}", cfg.images.display());
    let (values, dim) =
        tsimcne_eval::read_aligned(&cfg.embedding, cfg.embedding_column.as_deref(), n, &joined)?;
    if dim < 2 {
        return Err(ExploreError::Invalid(format!(
            "{}: a {dim}-D embedding cannot be drawn as a map (it needs 2 coordinates or more)",
            cfg.embedding.display()
        )));
    }
    // [n, 2]: the first two coordinates.
    let coords: Vec<f32> = values.chunks(dim).flat_map(|r| [r[0], r[1]]).collect();
    let features = match &cfg.features {
        Some(f) => Some(tsimcne_eval::read_aligned(
            &f.path,
            Some(&f.column),
            n,
            &joined,
        )?),
        None => None,
    };
    let metrics = cfg.metrics.as_deref().map(read_metrics).transpose()?;

    let k = cfg.neighbours.min(n - 1);
    let all: Vec<u32> = (0..n as u32).collect();
    let mut neighbours = Vec::new();
    let map_nb = if k > 0 {
        tsimcne_eval::knn::k_nearest(
            Data::F32 {
                dim: 2,
                values: &coords,
            },
            &all,
            &all,
            k,
            cfg.threads,
        )
    } else {
        Vec::new()
    };
    if k > 0 {
        neighbours.push(NeighbourSet {
            name: "map".to_string(),
            k,
            data: b64_u32(&map_nb),
        });
        if let (Some((values, fdim)), Some(spec)) = (&features, &cfg.features) {
            let nb = tsimcne_eval::knn::k_nearest(
                Data::F32 { dim: *fdim, values },
                &all,
                &all,
                k,
                cfg.threads,
            );
            neighbours.push(NeighbourSet {
                name: spec.column.clone(),
                k,
                data: b64_u32(&nb),
            });
        }
    }

    let layout = map_layout(&coords, &images, &map_nb, k);
    let packed = sheets::pack(&images, cfg.threads)?;
    let mut data = page_data(cfg, &images, &coords, metrics, neighbours, layout, &packed);
    let sheet_bytes: usize = packed.pngs.iter().map(Vec::len).sum();
    let mut files = Vec::new();
    let mut block = Vec::new();
    if sheet_bytes > cfg.single_file_max_bytes {
        for (s, png) in packed.pngs.iter().enumerate() {
            let url = format!("data:image/png;base64,{}", b64(png));
            let content = format!("tsimcneSheet({s},{});\n", page::script_json(&url));
            let name = format!("sheet-{s}-{:016x}.js", fnv1a(content.as_bytes()));
            data.sheets.files.push(format!("{DATA_DIR}/{name}"));
            files.push((name, content));
        }
    } else {
        data.sheets.lengths = packed.pngs.iter().map(Vec::len).collect();
        block = page::script_bytes(&packed.pngs.concat());
    }
    let html = page::render(&data.title, &page::script_json(&data), &block)?;
    Ok(Page {
        html,
        files,
        points: n,
        sheets: packed.pngs.len(),
    })
}

/// What the page shows beside the points, from the map and its neighbour
/// lists (`k` per point in `map_nb`).
#[derive(Debug)]
struct MapLayout {
    spacing: f32,
    density: String,
    disagreement: String,
    representatives: RepresentativesData,
    class_labels: Vec<[u32; 3]>,
}

fn map_layout(coords: &[f32], images: &ImageSet, map_nb: &[u32], k: usize) -> MapLayout {
    // Sparsity: the distance to the k-th map neighbour.
    let sparsity: Vec<f32> = if k > 0 {
        map_nb
            .chunks(k)
            .enumerate()
            .map(|(i, row)| {
                let j = row[k - 1] as usize;
                (coords[2 * i] - coords[2 * j]).hypot(coords[2 * i + 1] - coords[2 * j + 1])
            })
            .collect()
    } else {
        vec![0.0; images.len()]
    };
    let reps = layout::representatives(coords, &sparsity);
    let classes: Vec<Option<usize>> = images
        .labels
        .iter()
        .map(|l| l.and_then(|v| usize::try_from(v).ok()))
        .collect();
    let class_labels =
        layout::class_labels(coords, &classes, images.meta.class_names.len(), &reps.radii)
            .into_iter()
            .map(|l| [l.point, l.class, u32::from(l.level)])
            .collect();
    MapLayout {
        spacing: median_spacing(coords, map_nb, k),
        density: b64(&layout::density_ranks(&sparsity)),
        disagreement: b64(&layout::disagreement(&images.labels, map_nb, k)),
        representatives: RepresentativesData {
            radii: reps.radii,
            ids: b64_u32(&reps.ids),
            levels: b64(&reps.levels),
        },
        class_labels,
    }
}

fn page_data<'a>(
    cfg: &ExploreConfig,
    images: &'a ImageSet,
    coords: &[f32],
    metrics: Option<serde_json::Value>,
    neighbours: Vec<NeighbourSet>,
    layout: MapLayout,
    packed: &sheets::Sheets,
) -> PageData<'a> {
    let n = images.len();
    let meta = &images.meta;
    let hex = |c: [u8; 3]| format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
    let mut splits: Vec<&'static str> = Vec::new();
    let split: Vec<u8> = images
        .splits
        .iter()
        .map(|s| {
            let name = s.as_str();
            let at = splits.iter().position(|&x| x == name).unwrap_or_else(|| {
                splits.push(name);
                splits.len() - 1
            });
            at as u8
        })
        .collect();
    let labels: Vec<i32> = images.labels.iter().map(|l| l.unwrap_or(-1)).collect();
    let title = cfg.title.clone().unwrap_or_else(|| default_title(cfg));
    let paths =
        (!images.paths.is_empty()).then(|| images.paths.iter().map(|p| p.text.as_str()).collect());
    PageData {
        version: 1,
        title,
        n,
        image: ImageShape {
            height: meta.height as usize,
            width: meta.width as usize,
            channels: meta.channels as usize,
        },
        class_names: &meta.class_names,
        colours: tsimcne_plot::palette(meta.class_names.len())
            .into_iter()
            .map(hex)
            .collect(),
        unlabelled_colour: hex(tsimcne_plot::UNLABELLED),
        splits,
        paths,
        metrics,
        coords: b64(&coords
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()),
        labels: b64(&labels
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()),
        split: b64(&split),
        order: b64_u32(&draw_order(n, cfg.seed)),
        spacing: layout.spacing,
        neighbours,
        sheets: SheetsData {
            count: packed.pngs.len(),
            columns: packed.columns,
            per_sheet: packed.per_sheet,
            lengths: Vec::new(),
            files: Vec::new(),
        },
        density: layout.density,
        disagreement: layout.disagreement,
        representatives: layout.representatives,
        class_labels: layout.class_labels,
    }
}

/// "finetune · 10000 images" from `runs/x/finetune/embedding.parquet`.
fn default_title(cfg: &ExploreConfig) -> String {
    let stage = cfg
        .embedding
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned());
    let file = cfg
        .embedding
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stage {
        Some(s) => format!("{s}/{file}"),
        None => file,
    }
}

fn read_metrics(path: &Path) -> Result<serde_json::Value> {
    let bad = |what: String| ExploreError::Invalid(format!("{}: {what}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .len();
    if len > MAX_METRICS_BYTES {
        return Err(bad(format!(
            "{len} bytes is too large for a metrics.json (at most {MAX_METRICS_BYTES})"
        )));
    }
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad("not a metrics.json: expected a JSON object".to_string()));
    }
    Ok(value)
}

/// The median distance from a point to its nearest neighbour (row `i`'s
/// first entry of `nb`), or 1 when there is none.
fn median_spacing(coords: &[f32], nb: &[u32], k: usize) -> f32 {
    if k == 0 {
        return 1.0;
    }
    let mut d: Vec<f32> = nb
        .chunks(k)
        .enumerate()
        .map(|(i, row)| {
            let j = row[0] as usize;
            let dx = coords[2 * i] - coords[2 * j];
            let dy = coords[2 * i + 1] - coords[2 * j + 1];
            (dx * dx + dy * dy).sqrt()
        })
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 1.0;
    }
    let mid = d.len() / 2;
    *d.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// A seeded Fisher–Yates shuffle of `0..n`: no class is drawn over all the
/// others because of the table's row order.
fn draw_order(n: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::keyed(&[0x6472_6177, seed]);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

/// 64-bit FNV-1a: names a sheet file by its content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_u32(values: &[u32]) -> String {
    b64(&values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_specs_split_at_the_last_colon() {
        let f = FeatureSpec::parse("C:/runs/features.parquet:backbone").unwrap();
        assert_eq!(f.path, PathBuf::from("C:/runs/features.parquet"));
        assert_eq!(f.column, "backbone");
        assert!(FeatureSpec::parse("features.parquet").is_err());
        assert!(FeatureSpec::parse("features.parquet:").is_err());
    }

    #[test]
    fn the_draw_order_is_a_seeded_permutation() {
        let a = draw_order(1000, 3);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, draw_order(1000, 3));
        assert_ne!(a, draw_order(1000, 4));
    }

    #[test]
    fn spacing_is_the_median_nearest_distance() {
        // Points at 0, 1, 3 and 6 on a line: nearest distances 1, 1, 2, 3.
        let coords = [0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 6.0, 0.0];
        let nb = [1, 0, 1, 2];
        assert_eq!(median_spacing(&coords, &nb, 1), 2.0);
        assert_eq!(median_spacing(&coords, &[], 0), 1.0);
    }
}
