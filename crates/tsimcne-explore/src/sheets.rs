//! Thumbnails packed into PNG sheets: every image at its own size, exact
//! (PNG is lossless, grey stays grey), so the page can show a pixel-exact
//! enlargement and a test can hash what it shows.

use image::ImageEncoder as _;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use tsimcne_format::ImageSet;

use crate::{ExploreError, Result};

/// The largest side of a sheet, in pixels: every browser decodes images of
/// this size, and a canvas can draw from them.
pub(crate) const MAX_SIDE: usize = 4096;

/// Thumbnail sheets: image `i` is tile `i % per_sheet` of sheet
/// `i / per_sheet`, tiles row-major, `columns` per row.
#[derive(Debug)]
pub(crate) struct Sheets {
    pub columns: usize,
    pub per_sheet: usize,
    /// One PNG per sheet.
    pub pngs: Vec<Vec<u8>>,
}

/// Packs every image of `images` into sheets, encoding them on `threads`
/// threads.
pub(crate) fn pack(images: &ImageSet, threads: usize) -> Result<Sheets> {
    pack_within(images, threads, MAX_SIDE)
}

/// [`pack`] into sheets of at most `max_side` pixels a side.
fn pack_within(images: &ImageSet, threads: usize, max_side: usize) -> Result<Sheets> {
    let n = images.len();
    let h = images.meta.height as usize;
    let w = images.meta.width as usize;
    let c = images.meta.channels as usize;
    let colour = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => {
            return Err(ExploreError::Invalid(format!(
                "images of {c} channels cannot be shown (1 or 3)"
            )));
        }
    };
    if h == 0 || w == 0 || h > max_side || w > max_side {
        return Err(ExploreError::Invalid(format!(
            "images of {h}×{w} pixels cannot be shown (1 to {max_side} a side)"
        )));
    }
    // Square-ish sheets for small collections, full-width ones for large.
    let columns = (max_side / w).min(n.isqrt() + 1);
    let per_sheet = columns * (max_side / h);
    let count = n.div_ceil(per_sheet);
    let mut pngs: Vec<Result<Vec<u8>>> = (0..count).map(|_| Ok(Vec::new())).collect();
    let per_thread = count.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (t, out) in pngs.chunks_mut(per_thread).enumerate() {
            s.spawn(move || {
                for (j, png) in out.iter_mut().enumerate() {
                    let sheet = t * per_thread + j;
                    let first = sheet * per_sheet;
                    let last = (first + per_sheet).min(n);
                    *png = encode(images, first..last, columns, colour);
                }
            });
        }
    });
    Ok(Sheets {
        columns,
        per_sheet,
        pngs: pngs.into_iter().collect::<Result<_>>()?,
    })
}

/// One sheet: the images `range`, `columns` to a row.
fn encode(
    images: &ImageSet,
    range: std::ops::Range<usize>,
    columns: usize,
    colour: image::ExtendedColorType,
) -> Result<Vec<u8>> {
    let h = images.meta.height as usize;
    let w = images.meta.width as usize;
    let c = images.meta.channels as usize;
    let count = range.len();
    let rows = count.div_ceil(columns);
    let cols = columns.min(count);
    let (sheet_w, sheet_h) = (cols * w, rows * h);
    // [sheet_h, sheet_w, c]
    let mut pixels = vec![0u8; sheet_w * sheet_h * c];
    for (t, i) in range.enumerate() {
        let (tx, ty) = (t % columns, t / columns);
        let img = images.image(i); // [h, w, c]
        for y in 0..h {
            let dst = ((ty * h + y) * sheet_w + tx * w) * c;
            pixels[dst..dst + w * c].copy_from_slice(&img[y * w * c..(y + 1) * w * c]);
        }
    }
    let mut png = Vec::new();
    // Adaptive filtering at the default level: the smallest of the PNG
    // filters on Fashion-MNIST (Best and lossless WebP were not smaller).
    PngEncoder::new_with_quality(&mut png, CompressionType::Default, FilterType::Adaptive)
        .write_image(&pixels, sheet_w as u32, sheet_h as u32, colour)
        .map_err(|e| ExploreError::Invalid(format!("encoding a thumbnail sheet: {e}")))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsimcne_format::ImageMeta;

    fn set(n: usize, h: u32, w: u32, c: u32) -> ImageSet {
        let len = (h * w * c) as usize;
        let pixels = (0..n * len).map(|i| (i * 7 % 251) as u8).collect();
        ImageSet::train_only(
            ImageMeta::folder((h, w, c), vec![], "md5:0".into()),
            vec![None; n],
            pixels,
        )
    }

    /// Decoding the sheets gives back every image's exact pixels.
    #[test]
    fn sheets_hold_every_image_exactly() {
        // One sheet, one partly filled, several sheets of 4 × 6 tiles.
        for (n, h, w, c, sheets) in [(1, 5, 7, 1, 1), (10, 5, 7, 3, 1), (50, 5, 7, 3, 3)] {
            let images = set(n, h, w, c);
            let s = pack_within(&images, 2, 32).unwrap();
            assert_eq!(s.pngs.len(), sheets);
            assert_eq!(s.pngs.len(), n.div_ceil(s.per_sheet));
            for i in 0..n {
                let png = &s.pngs[i / s.per_sheet];
                let sheet = image::load_from_memory(png).unwrap();
                let t = i % s.per_sheet;
                let (x, y) = ((t % s.columns) as u32 * w, (t / s.columns) as u32 * h);
                let tile = sheet.crop_imm(x, y, w, h);
                let bytes = if c == 1 {
                    tile.to_luma8().into_raw()
                } else {
                    tile.to_rgb8().into_raw()
                };
                assert_eq!(bytes, images.image(i), "image {i} of {n}");
            }
        }
    }
}
