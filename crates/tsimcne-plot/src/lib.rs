//! Scatter plots of 2-D embeddings (t-SimCNE maps), as PNG bytes or an SVG
//! string, with no system dependencies: no fonts, no graphics libraries.
//!
//! A [`Map`] is a set of points with optional integer labels, class names
//! for the legend, an optional title and optional thumbnails (small images
//! drawn, framed, at some points). [`render_png`] rasterises it itself
//! (anti-aliased discs, straight-alpha "over" compositing on white, an
//! embedded hand-drawn 5×7 bitmap font) and encodes with the `image`
//! crate; [`render_svg`] writes the same layout as SVG text.
//!
//! Choices a reader of the picture should know:
//!
//! - **Colours** come from [`palette`]: `tab10` up to 10 classes, `tab20`
//!   up to 20, and beyond a deterministic maximin set in OKLab that avoids
//!   near-white, near-black and grey. Unlabelled points are light grey,
//!   fainter, and drawn first, under the labelled ones (`tab10` and
//!   `tab20` have grey classes of their own, darker or as light).
//! - **Order:** labelled points are drawn in an order shuffled by
//!   [`Style::seed`], not class by class, so no class systematically hides
//!   another.
//! - **Size and opacity** fall with log n: a few hundred points are big and
//!   nearly opaque, tens of thousands small and translucent so density
//!   shows.
//! - **Axes** have an equal aspect ratio and no ticks, only a thin frame.
//!   The view covers the 0.1–99.9 percentile range of each coordinate
//!   widened by a quarter of its span on each side (but never beyond the
//!   data), plus a small margin: a far cluster stays in view, a single
//!   wild outlier does not shrink the map to a dot. Points outside the
//!   view are clipped.
//! - **Legend** to the right of the map, one entry per class name (or per
//!   label present, by number, when no names are given), in as many
//!   columns and as small a font as it takes; names that still do not fit
//!   are shortened with `…`.
//! - **Text:** the PNG draws printable ASCII, `·` and `…`; other characters
//!   come out as `?`. The SVG keeps all text (XML-escaped) and uses a
//!   monospace font of the same size.
//!
//! Output depends only on the inputs and the seed: the same call gives the
//! same bytes.

mod font;
mod layout;
mod palette;
mod raster;
mod svg;

pub use palette::{UNLABELLED, palette};

/// A 2-D map to draw.
#[derive(Clone, Copy, Debug)]
pub struct Map<'a> {
    /// One `[x, y]` per point; y points up.
    pub points: &'a [[f32; 2]],
    /// One per point; `None` is unlabelled (drawn grey).
    pub labels: &'a [Option<u32>],
    /// Legend entries in label order. When empty, the legend shows the
    /// labels present as numbers (and there is none when no point has a
    /// label); when not, every label must be below its length.
    pub class_names: &'a [String],
    /// Drawn centred above the map.
    pub title: Option<&'a str>,
    /// Small images drawn at some points, on top of everything.
    pub thumbnails: &'a [Thumbnail],
}

/// A small image drawn at a point of the map, framed in its class colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    /// Index into [`Map::points`].
    pub point: usize,
    pub height: usize,
    pub width: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height · width · channels` bytes, row-major, channels last (HWC).
    pub pixels: Vec<u8>,
}

/// Picture size and the seed of the drawing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Pixels of the PNG; the SVG has the same size in user units.
    pub width: u32,
    pub height: u32,
    /// Seeds the order in which points are drawn.
    pub seed: u64,
}

impl Default for Style {
    /// 1600 × 1200, seed 0.
    fn default() -> Self {
        Self {
            width: 1600,
            height: 1200,
            seed: 0,
        }
    }
}

/// The smallest accepted [`Style::width`] and [`Style::height`].
pub const MIN_SIZE: u32 = 64;
/// The largest accepted [`Style::width`] and [`Style::height`] (the PNG
/// canvas holds 12 bytes per pixel while drawing: 800 MB at this size).
pub const MAX_SIZE: u32 = 8192;

/// Why a map cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no points to plot")]
    Empty,
    #[error("{labels} labels for {points} points")]
    LabelCount { points: usize, labels: usize },
    #[error("point {index} has a non-finite coordinate ({x}, {y})")]
    NonFinite { index: usize, x: f32, y: f32 },
    #[error("point {index} has label {label} but there are only {classes} class names")]
    LabelOutOfRange {
        index: usize,
        label: u32,
        classes: usize,
    },
    #[error("thumbnail {index}: {reason}")]
    BadThumbnail { index: usize, reason: String },
    #[error("picture size {width}x{height} is outside {MIN_SIZE}..={MAX_SIZE} per side")]
    BadSize { width: u32, height: u32 },
    #[error("png encoding failed")]
    Encode(#[from] image::ImageError),
}

/// Draws `map` as a PNG of `style.width × style.height` pixels (8-bit RGB).
pub fn render_png(map: &Map<'_>, style: &Style) -> Result<Vec<u8>, PlotError> {
    let scene = layout::layout(map, style)?;
    raster::render(&scene)
}

/// Draws `map` as an SVG document of `style.width × style.height` user
/// units: one `<circle>` per point, in drawing order.
pub fn render_svg(map: &Map<'_>, style: &Style) -> Result<String, PlotError> {
    let scene = layout::layout(map, style)?;
    svg::render(&scene)
}
