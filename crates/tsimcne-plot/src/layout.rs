//! From a [`Map`] to a [`Scene`]: validation, colours, drawing order, the
//! view, and where every point, thumbnail and piece of text goes. Both
//! back ends draw the same scene, so the PNG and the SVG agree.

use tsimcne_rng::SplitMix64;

use crate::font::{self, ADVANCE, ROWS};
use crate::palette::{UNLABELLED, palette};
use crate::{MAX_SIZE, MIN_SIZE, Map, PlotError, Style, Thumbnail};

/// Colour of text.
pub(crate) const INK: [u8; 3] = [0x22, 0x22, 0x22];
/// Colour of the frame, and of thumbnail frames of unlabelled points.
pub(crate) const FRAME: [u8; 3] = [0x55, 0x55, 0x55];

/// Key of the drawing-order stream (ASCII "plotordr").
const ORDER_KEY: u64 = 0x706c_6f74_6f72_6472;

/// A rectangle of whole pixels, `[x0, x1) × [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PixRect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

/// A point in picture coordinates (pixels, y down) and its colour slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot {
    pub x: f32,
    pub y: f32,
    pub slot: u32,
}

/// A line of text: `x` is its left edge, `top` the top of its capitals.
#[derive(Clone, Debug)]
pub(crate) struct Text {
    pub x: i32,
    pub top: i32,
    pub scale: u32,
    pub text: String,
    /// Centred on `x + width / 2` (the SVG anchors it there).
    pub centred: bool,
}

/// A legend marker: a full-opacity disc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Swatch {
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
    pub slot: u32,
}

/// A thumbnail's place: the image covers `[x, x + w) × [y, y + h)`, with a
/// frame `border` pixels wide around it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlacedThumb<'a> {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
    pub border: u32,
    pub colour: [u8; 3],
    pub thumb: &'a Thumbnail,
}

/// Everything to draw, in picture coordinates.
#[derive(Debug)]
pub(crate) struct Scene<'a> {
    pub width: u32,
    pub height: u32,
    /// The frame's interior; points and thumbnails are clipped to it.
    pub frame: PixRect,
    /// Thickness of the frame line, drawn just outside `frame`.
    pub frame_px: u32,
    pub radius: f32,
    pub alpha: f32,
    pub unlabelled_alpha: f32,
    /// One colour per class slot, then the unlabelled grey (last).
    pub colours: Vec<[u8; 3]>,
    /// Points in drawing order.
    pub dots: Vec<Dot>,
    pub thumbs: Vec<PlacedThumb<'a>>,
    pub texts: Vec<Text>,
    pub swatches: Vec<Swatch>,
}

impl Scene<'_> {
    pub(crate) fn unlabelled_slot(&self) -> u32 {
        self.colours.len() as u32 - 1
    }
}

pub(crate) fn layout<'a>(map: &Map<'a>, style: &Style) -> Result<Scene<'a>, PlotError> {
    validate(map, style)?;
    let (width, height) = (style.width, style.height);
    let n = map.points.len();

    // Colour slots: the label itself with class names, else the rank of
    // the label among those present.
    let present: Vec<u32> = if map.class_names.is_empty() {
        let mut p: Vec<u32> = map.labels.iter().flatten().copied().collect();
        p.sort_unstable();
        p.dedup();
        p
    } else {
        Vec::new()
    };
    let n_classes = if map.class_names.is_empty() {
        present.len()
    } else {
        map.class_names.len()
    };
    let mut colours = palette(n_classes);
    colours.push(UNLABELLED);
    let unlabelled_slot = n_classes as u32;
    let slot_of = |label: Option<u32>| match label {
        None => unlabelled_slot,
        Some(l) if map.class_names.is_empty() => present.binary_search(&l).unwrap_or(0) as u32,
        Some(l) => l,
    };

    let mut entries: Vec<(String, u32)> = if map.class_names.is_empty() {
        present
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i as u32))
            .collect()
    } else {
        map.class_names
            .iter()
            .enumerate()
            .map(|(i, s)| (clean(s), i as u32))
            .collect()
    };
    if !entries.is_empty() && map.labels.iter().any(Option::is_none) {
        entries.push(("unlabelled".to_owned(), unlabelled_slot));
    }

    // Sizes relative to the picture.
    let short = width.min(height) as f32;
    let base = ((short / 600.0).round() as u32).clamp(1, 4);
    let margin = (short * 0.025).round().max(4.0) as i32;
    let mut texts = Vec::new();
    let mut top = margin;
    if let Some(title) = map.title {
        let title = clean(title);
        if !title.trim().is_empty() {
            let avail = width as i32 - 2 * margin;
            let scale = (1..=base + 2)
                .rev()
                .find(|&s| font::text_width(&title, s) as i32 <= avail)
                .unwrap_or(1);
            let max_chars = ((avail + (ADVANCE - font::GLYPH_W) as i32) / ADVANCE as i32).max(1);
            let title = shorten(&title, max_chars as usize);
            let w = font::text_width(&title, scale) as i32;
            texts.push(Text {
                x: (width as i32 - w) / 2,
                top,
                scale,
                text: title,
                centred: true,
            });
            top += ROWS as i32 * scale as i32 + margin / 2;
        }
    }
    let bottom = height as i32 - margin;
    let avail_h = (bottom - top).max(1);

    // The legend, sized before the map gets the rest of the width.
    let legend = legend_layout(&entries, avail_h, (width as f32 * 0.36) as i32, base);
    let gap = if legend.is_some() { margin } else { 0 };
    let legend_w = legend.as_ref().map_or(0, |l| l.width);
    let avail_w = (width as i32 - 2 * margin - gap - legend_w).max(1);

    // The view: robust bounds, equal aspect, a small margin.
    let (mut x0, mut x1) = robust_range(map.points.iter().map(|p| p[0]));
    let (mut y0, mut y1) = robust_range(map.points.iter().map(|p| p[1]));
    let span = (x1 - x0).max(y1 - y0);
    let span = if span > 0.0 { span } else { 1.0 };
    for (lo, hi) in [(&mut x0, &mut x1), (&mut y0, &mut y1)] {
        if *hi - *lo < span * 1e-3 {
            let mid = 0.5 * (*lo + *hi);
            (*lo, *hi) = (mid - span * 5e-4, mid + span * 5e-4);
        }
        let pad = 0.03 * span;
        (*lo, *hi) = (*lo - pad, *hi + pad);
    }
    let k = (f64::from(avail_w) / (x1 - x0)).min(f64::from(avail_h) / (y1 - y0));
    let fw = ((x1 - x0) * k).round().max(1.0) as i32;
    let fh = ((y1 - y0) * k).round().max(1.0) as i32;
    let group_w = fw + gap + legend_w;
    let fx0 = margin + ((width as i32 - 2 * margin - group_w) / 2).max(0);
    let fy0 = top + (avail_h - fh) / 2;
    let frame = PixRect {
        x0: fx0,
        y0: fy0,
        x1: fx0 + fw,
        y1: fy0 + fh,
    };
    let to_px = |p: [f32; 2]| {
        (
            (f64::from(fx0) + (f64::from(p[0]) - x0) * k) as f32,
            (f64::from(fy0) + (y1 - f64::from(p[1])) * k) as f32,
        )
    };

    // Point size and opacity fall with log n.
    let t = (((n as f32).ln() - 200f32.ln()) / (100_000f32.ln() - 200f32.ln())).clamp(0.0, 1.0);
    let size = ((fw * fh) as f32).sqrt() / 1000.0;
    let radius = (6.0 * (1.3f32 / 6.0).powf(t) * size).max(0.8);
    let alpha = 0.9 * (0.3f32 / 0.9).powf(t);

    // Drawing order: unlabelled first (underneath), then the labelled
    // points, each group shuffled.
    let mut rng = SplitMix64::keyed(&[style.seed, ORDER_KEY]);
    let (mut unlabelled, mut labelled): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| map.labels[i].is_none());
    for group in [&mut unlabelled, &mut labelled] {
        for i in (1..group.len()).rev() {
            group.swap(i, rng.below(i + 1));
        }
    }
    let dots = unlabelled
        .iter()
        .chain(&labelled)
        .map(|&i| {
            let (x, y) = to_px(map.points[i]);
            Dot {
                x,
                y,
                slot: slot_of(map.labels[i]),
            }
        })
        .collect();

    let thumbs = map
        .thumbnails
        .iter()
        .map(|t| {
            let target = 0.05 * f64::from(fw.max(fh));
            let mut f = target / t.height.max(t.width) as f64;
            if f >= 1.0 {
                f = f.round();
            }
            let w = ((t.width as f64 * f).round() as u32).max(1);
            let h = ((t.height as f64 * f).round() as u32).max(1);
            let (cx, cy) = to_px(map.points[t.point]);
            let colour = match map.labels[t.point] {
                None => FRAME,
                label => colours[slot_of(label) as usize],
            };
            PlacedThumb {
                x: (cx - w as f32 / 2.0).round() as i32,
                y: (cy - h as f32 / 2.0).round() as i32,
                w,
                h,
                border: base + 1,
                colour,
                thumb: t,
            }
        })
        .collect();

    let mut swatches = Vec::new();
    if let Some(legend) = legend {
        let lx = frame.x1 + gap;
        let ly = if legend.height <= fh { fy0 } else { top };
        let s = legend.scale as i32;
        for (i, (text, slot)) in legend.entries.into_iter().enumerate() {
            let col = i as i32 / legend.rows;
            let row = i as i32 % legend.rows;
            let x = lx + col * legend.col_w;
            let y = ly + row * legend.line;
            if let Some(slot) = slot {
                let r = 3.0 * s as f32;
                swatches.push(Swatch {
                    cx: x as f32 + r,
                    cy: y as f32 + 4.0 * s as f32,
                    r,
                    slot,
                });
            }
            texts.push(Text {
                x: x + 9 * s,
                top: y,
                scale: legend.scale,
                text,
                centred: false,
            });
        }
    }

    Ok(Scene {
        width,
        height,
        frame,
        frame_px: (short / 800.0).round().max(1.0) as u32,
        radius,
        alpha,
        unlabelled_alpha: alpha * 0.6,
        colours,
        dots,
        thumbs,
        texts,
        swatches,
    })
}

fn validate(map: &Map<'_>, style: &Style) -> Result<(), PlotError> {
    let (width, height) = (style.width, style.height);
    if !(MIN_SIZE..=MAX_SIZE).contains(&width) || !(MIN_SIZE..=MAX_SIZE).contains(&height) {
        return Err(PlotError::BadSize { width, height });
    }
    let n = map.points.len();
    if n == 0 {
        return Err(PlotError::Empty);
    }
    if map.labels.len() != n {
        return Err(PlotError::LabelCount {
            points: n,
            labels: map.labels.len(),
        });
    }
    if let Some(index) = map
        .points
        .iter()
        .position(|p| !p[0].is_finite() || !p[1].is_finite())
    {
        let [x, y] = map.points[index];
        return Err(PlotError::NonFinite { index, x, y });
    }
    let classes = map.class_names.len();
    if classes > 0 {
        let bad = map
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| l.is_some_and(|l| l as usize >= classes));
        if let Some((index, &Some(label))) = bad {
            return Err(PlotError::LabelOutOfRange {
                index,
                label,
                classes,
            });
        }
    }
    for (index, t) in map.thumbnails.iter().enumerate() {
        let reason = if t.point >= n {
            format!("point {} is not among the {n} points", t.point)
        } else if t.channels != 1 && t.channels != 3 {
            format!("{} channels, expected 1 or 3", t.channels)
        } else if t.height == 0 || t.width == 0 {
            format!("empty image {}x{}", t.height, t.width)
        } else if t.height > 4096 || t.width > 4096 {
            format!("image {}x{} is larger than 4096x4096", t.height, t.width)
        } else if t.pixels.len() != t.height * t.width * t.channels {
            format!(
                "{} bytes for a {}x{}x{} image",
                t.pixels.len(),
                t.height,
                t.width,
                t.channels
            )
        } else {
            continue;
        };
        return Err(PlotError::BadThumbnail { index, reason });
    }
    Ok(())
}

/// The 0.1–99.9 percentile range widened by a quarter of its span on each
/// side, within the data's min and max.
fn robust_range(values: impl Iterator<Item = f32>) -> (f64, f64) {
    let mut v: Vec<f32> = values.collect();
    let n = v.len();
    let lo_i = ((n - 1) as f64 * 0.001).floor() as usize;
    let hi_i = ((n - 1) as f64 * 0.999).ceil() as usize;
    let (min, max) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let p_lo = f64::from(*v.select_nth_unstable_by(lo_i, f32::total_cmp).1);
    let p_hi = f64::from(*v.select_nth_unstable_by(hi_i, f32::total_cmp).1);
    let widen = 0.25 * (p_hi - p_lo);
    (
        (p_lo - widen).max(f64::from(min)),
        (p_hi + widen).min(f64::from(max)),
    )
}

/// Text without control characters (they become spaces) or XML
/// non-characters (they become `?`).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            '\u{fffe}' | '\u{ffff}' => '?',
            c => c,
        })
        .collect()
}

/// `s` cut to at most `max_chars` characters, the last being `…` when cut.
fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('\u{2026}');
    out
}

/// `s` cut to at most `max_chars` characters by replacing its middle with
/// `…`, so names sharing a prefix or a suffix stay distinguishable.
fn shorten_middle(s: &str, max_chars: usize) -> String {
    let n = s.chars().count();
    if n <= max_chars {
        return s.to_owned();
    }
    let keep = max_chars.saturating_sub(1);
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('\u{2026}');
    out.extend(s.chars().skip(n - tail));
    out
}

/// A legend's font scale and grid; `entries` are the lines to draw, each
/// with its swatch's slot (`None` for the "+k more" line).
#[derive(Debug)]
struct Legend {
    scale: u32,
    rows: i32,
    line: i32,
    col_w: i32,
    width: i32,
    height: i32,
    entries: Vec<(String, Option<u32>)>,
}

impl Legend {
    /// `cols` columns of `col_w` by `rows` lines of `line` at font `scale`.
    fn grid(
        scale: u32,
        (line, cols, rows, col_w): (i32, i32, i32, i32),
        entries: Vec<(String, Option<u32>)>,
    ) -> Self {
        Self {
            scale,
            rows,
            line,
            col_w,
            width: cols * col_w,
            height: rows * line,
            entries,
        }
    }
}

/// Fits the legend in `avail_h × max_w`: the largest font scale (up to
/// `base`, or `base + 1` in a single column) at which all entries fit in
/// columns; failing that, scale 1 with names shortened in the middle;
/// failing that, as many entries as fit and a "+k more" line.
fn legend_layout(entries: &[(String, u32)], avail_h: i32, max_w: i32, base: u32) -> Option<Legend> {
    let n = entries.len() as i32;
    if n == 0 {
        return None;
    }
    let chars = entries
        .iter()
        .map(|(s, _)| s.chars().count())
        .max()
        .unwrap_or(0) as i32;
    // A column: swatch (6) and gap (3), text, gap to the next column (6).
    let col_w = |scale: i32, chars: i32| (9 + ADVANCE as i32 * chars + 6) * scale;
    let grid = |scale: i32| {
        let line = 10 * scale;
        let rows_max = (avail_h / line).max(1);
        let cols = (n + rows_max - 1) / rows_max;
        let rows = (n + cols - 1) / cols;
        (line, rows_max, cols, rows)
    };
    let all = |names: Vec<String>| {
        names
            .into_iter()
            .zip(entries)
            .map(|(s, e)| (s, Some(e.1)))
            .collect()
    };
    // One size up from the base when a single column holds everything.
    for scale in (1..=base as i32 + 1).rev() {
        let (line, _, cols, rows) = grid(scale);
        let w = col_w(scale, chars);
        if cols * w <= max_w && (scale <= base as i32 || cols == 1) {
            let names = entries.iter().map(|e| e.0.clone()).collect();
            return Some(Legend::grid(
                scale as u32,
                (line, cols, rows, w),
                all(names),
            ));
        }
    }
    // Scale 1, shortened names.
    let (line, rows_max, cols, rows) = grid(1);
    let fit_chars = (max_w / cols - col_w(1, 0)) / ADVANCE as i32;
    if fit_chars >= 5 {
        let names = entries
            .iter()
            .map(|e| shorten_middle(&e.0, fit_chars as usize))
            .collect();
        let w = col_w(1, fit_chars.min(chars));
        return Some(Legend::grid(1, (line, cols, rows, w), all(names)));
    }
    // As many entries as fit, names shortened to 5 characters.
    let w = col_w(1, 5);
    let cols = (max_w / w).max(1);
    let keep = (cols * rows_max - 1).max(0) as usize;
    let mut lines: Vec<(String, Option<u32>)> = entries[..keep]
        .iter()
        .map(|e| (shorten_middle(&e.0, 5), Some(e.1)))
        .collect();
    lines.push((format!("+{}", entries.len() - keep), None));
    let rows = rows_max.min(lines.len() as i32);
    Some(Legend::grid(1, (line, cols, rows, w), lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_range_ignores_a_wild_outlier_but_keeps_a_small_far_cluster() {
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32).collect();
        v.push(1e6);
        let (lo, hi) = robust_range(v.iter().copied());
        assert_eq!(lo, 0.0);
        assert!((99.0..130.0).contains(&hi), "{hi}");
        // Ten points at 120 (0.1 % of them) are inside the widened range.
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32).collect();
        v.extend([120.0; 10]);
        assert_eq!(robust_range(v.iter().copied()).1, 120.0);
        assert_eq!(robust_range([3.0f32].into_iter()), (3.0, 3.0));
    }

    #[test]
    fn shorten_marks_cuts() {
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdef", 4), "abc\u{2026}");
        assert_eq!(clean("a\nb\u{ffff}"), "a b?");
        assert_eq!(shorten_middle("class name 12", 13), "class name 12");
        assert_eq!(shorten_middle("class name 12", 8), "clas\u{2026} 12");
        assert_eq!(shorten_middle("class name 12", 1), "\u{2026}");
    }

    #[test]
    fn legend_fits_many_entries() {
        let entries: Vec<(String, u32)> = (0..100)
            .map(|i| (format!("class_name_{i:03}"), i))
            .collect();
        let l = legend_layout(&entries, 1100, 576, 2).unwrap();
        assert!(l.width <= 576 && l.height <= 1100, "{l:?}");
        assert_eq!(l.entries.len(), 100);
        // Too many for the space: a "+k more" line and nothing beyond it.
        let entries: Vec<(String, u32)> = (0..5000).map(|i| (format!("c{i}"), i)).collect();
        let l = legend_layout(&entries, 200, 100, 1).unwrap();
        assert!(
            l.width <= 100 && l.height <= 200,
            "{:?}",
            (l.width, l.height)
        );
        assert!(l.entries.last().unwrap().0.starts_with('+'));
        assert!(l.entries.len() < 5000);
    }
}
