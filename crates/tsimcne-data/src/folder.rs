//! Image folders (PNG, JPEG, WebP, TIFF, BMP, GIF): one subfolder per class (torchvision's
//! `ImageFolder` layout) or a flat folder of unlabelled images.
//!
//! **Invariant:** the output is independent of the thread count: files are
//! sorted, and each thread fills its own contiguous slice of the table.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{ColorType, DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use tsimcne_format::{ImageMeta, ImageSet, SourcePath};

use crate::checksum::{listing_checksum, md5_bytes};
use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

/// The file names read (in any case); a GIF's first frame counts.
const EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif", "jfif",
];
const MAX_DEPTH: usize = 16;
/// The largest side an image table accepts (`tsimcne.height`, `tsimcne.width`).
const MAX_SIDE: u32 = 1 << 15;

/// How `--size` makes every image the same size (a variant's doc is its
/// `--help` line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Fit {
    /// Scale to cover the target size, then cut the centre (keeps aspect ratio; torchvision's Resize + CenterCrop).
    #[default]
    Crop,
    /// Scale each side to the target size (distorts non-square images).
    Stretch,
}

/// What `read_folder` does with a file it cannot decode exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unreadable {
    /// Stop at the first such file, naming it: the first in sorted order
    /// whose header cannot be read, else the first whose pixels cannot.
    #[default]
    Stop,
    /// Leave it out, and list it in [`FolderRead::skipped`].
    Skip,
}

/// What `read_folder` does with a file whose bytes equal an earlier one's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Duplicates {
    /// Keep every copy (each is still reported).
    #[default]
    Keep,
    /// Keep only the first of each set, in sorted order.
    Drop,
}

#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Target (height, width); `None` requires all images to share one size.
    pub size: Option<(u32, u32)>,
    /// 1 or 3; `None` picks 1 when every image is greyscale, else 3.
    pub channels: Option<u32>,
    pub fit: Fit,
    pub threads: usize,
    pub unreadable: Unreadable,
    pub duplicates: Duplicates,
}

/// A file with the same bytes as an earlier one (in sorted order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// Relative to the folder, as [`FolderEntry::rel`].
    pub rel: String,
    /// The first file of its set.
    pub of: String,
}

/// A file left out by [`Unreadable::Skip`], and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Relative to the folder, `/`-separated, as [`FolderEntry::rel`].
    pub rel: String,
    /// The decoder's or the system's message, without the path.
    pub reason: String,
}

/// What [`read_folder`] read: the table and the files it left out.
#[derive(Clone, Debug)]
pub struct FolderRead {
    pub set: ImageSet,
    pub skipped: Vec<Skipped>,
    /// Every file after the first of a set of identical files, whether
    /// [`Duplicates::Drop`] left it out or not.
    pub duplicates: Vec<Duplicate>,
}

/// One image file found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Relative to the folder, `/`-separated; a name that is not UTF-8 has
    /// U+FFFD in place of its invalid bytes.
    pub rel: String,
    /// The exact bytes of that path, only where `rel` is lossy.
    pub raw: Option<Vec<u8>>,
    pub label: Option<i32>,
}

impl FolderEntry {
    /// The file itself, below `root`: by its exact bytes where `rel` is
    /// lossy.
    pub fn file(&self, root: &Path) -> PathBuf {
        #[cfg(unix)]
        if let Some(raw) = &self.raw {
            use std::os::unix::ffi::OsStrExt;
            return root.join(std::ffi::OsStr::from_bytes(raw));
        }
        root.join(&self.rel)
    }
}

/// The files of a folder and its class names (empty if unlabelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    pub class_names: Vec<String>,
    pub entries: Vec<FolderEntry>,
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn sorted_children(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| PrepError::io(dir, e))? {
        let p = e.map_err(|e| PrepError::io(dir, e))?.path();
        if !is_hidden(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The real folder behind `dir` (links resolved).
fn real(dir: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(dir).map_err(|e| PrepError::io(dir, e))
}

/// All image files below `dir`, recursively, sorted. Links are followed;
/// `ancestors` are the real folders from the root down to `dir`'s parent,
/// so a link back to one of them is reported as the cycle it closes.
fn images_below(dir: &Path, ancestors: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) -> Result<()> {
    let here = real(dir)?;
    if let Some(a) = ancestors.iter().find(|a| **a == here) {
        let target = std::fs::read_link(dir)
            .map_or_else(|_| a.display().to_string(), |t| t.display().to_string());
        return Err(PrepError::invalid(
            dir,
            format!(
                "this link (to {target}) leads back to {}, which contains it: a cycle",
                a.display()
            ),
        ));
    }
    if ancestors.len() > MAX_DEPTH {
        return Err(PrepError::invalid(
            dir,
            format!("folders nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    ancestors.push(here);
    for p in sorted_children(dir)? {
        if p.is_dir() {
            images_below(&p, ancestors, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    ancestors.pop();
    Ok(())
}

fn rel(root: &Path, p: &Path) -> String {
    source_path(root, p).text
}

/// The path of `p` below `root`, `/`-separated, exact where the name is
/// not UTF-8 (on Unix, where file names are bytes).
fn source_path(root: &Path, p: &Path) -> SourcePath {
    let r = p.strip_prefix(root).unwrap_or(p);
    let parts: Vec<&std::ffi::OsStr> = r.components().map(|c| c.as_os_str()).collect();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        SourcePath::from_bytes(
            &parts
                .iter()
                .map(|c| c.as_bytes())
                .collect::<Vec<_>>()
                .join(&b'/'),
        )
    }
    #[cfg(not(unix))]
    {
        let text: Vec<_> = parts.iter().map(|c| c.to_string_lossy()).collect();
        SourcePath {
            text: text.join("/"),
            bytes: None,
        }
    }
}

fn entry(root: &Path, p: &Path, label: Option<i32>) -> FolderEntry {
    let path = source_path(root, p);
    FolderEntry {
        rel: path.text,
        raw: path.bytes,
        label,
    }
}

/// Lists the images of `root`: class subfolders, or a flat folder.
pub fn scan(root: &Path) -> Result<FolderListing> {
    if !root.is_dir() {
        return Err(PrepError::invalid(root, "not a directory"));
    }
    let children = sorted_children(root)?;
    let top_images: Vec<&PathBuf> = children
        .iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    let class_dirs: Vec<&PathBuf> = children.iter().filter(|p| p.is_dir()).collect();
    if !top_images.is_empty() {
        if let Some(d) = class_dirs.first() {
            return Err(PrepError::invalid(
                root,
                format!(
                    "mixes images ({}) with class folders ({}); use one layout",
                    rel(root, top_images[0]),
                    rel(root, d)
                ),
            ));
        }
        let entries = top_images.iter().map(|p| entry(root, p, None)).collect();
        return Ok(FolderListing {
            class_names: Vec::new(),
            entries,
        });
    }
    if class_dirs.is_empty() {
        return Err(PrepError::invalid(
            root,
            "holds no images (PNG, JPEG, WebP, TIFF, BMP or GIF)",
        ));
    }
    let mut listing = FolderListing {
        class_names: Vec::new(),
        entries: Vec::new(),
    };
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut files = Vec::new();
        images_below(dir, &mut vec![real(root)?], &mut files)?;
        if files.is_empty() {
            return Err(PrepError::invalid(
                dir,
                "class folder holds no images (PNG, JPEG, WebP, TIFF, BMP or GIF)",
            ));
        }
        let label =
            i32::try_from(label).map_err(|_| PrepError::invalid(root, "too many classes"))?;
        listing.class_names.push(rel(root, dir));
        listing
            .entries
            .extend(files.iter().map(|p| entry(root, p, Some(label))));
    }
    Ok(listing)
}

/// Runs `f` on every work item, on `threads` threads that each take one
/// contiguous run of items. Results come back in item order; on failure, the
/// error of the lowest-numbered failing item.
fn parallel_each<W: Send, R: Send>(
    work: Vec<W>,
    threads: usize,
    f: impl Fn(W) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let per = work.len().div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<W>> = Vec::new();
    let mut it = work.into_iter().peekable();
    while it.peek().is_some() {
        runs.push(it.by_ref().take(per).collect());
    }
    let results: Vec<Result<Vec<R>>> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.into_iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

fn image_error(path: &Path, e: impl std::fmt::Display) -> PrepError {
    PrepError::Image {
        path: path.into(),
        detail: e.to_string(),
    }
}

/// Why a file could not be read, without its path.
fn reason(e: &PrepError) -> String {
    match e {
        PrepError::Image { detail, .. } => detail.clone(),
        PrepError::Format(tsimcne_format::FormatError::Io { source, .. }) => source.to_string(),
        other => other.to_string(),
    }
}

/// A file that stops the run: its name, what is wrong, and the way out.
fn unreadable(path: &Path, e: &PrepError) -> PrepError {
    PrepError::Image {
        path: path.into(),
        detail: format!(
            "{} (--skip-unreadable leaves such files out and lists them)",
            reason(e)
        ),
    }
}

/// Reads only the header: (width, height, colour type).
fn probe(path: &Path) -> Result<(u32, u32, ColorType)> {
    let reader = ImageReader::open(path)
        .map_err(|e| PrepError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| PrepError::io(path, e))?;
    let mut decoder = reader.into_decoder().map_err(|e| image_error(path, e))?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    // The size the picture is shown at: EXIF rotations by 90 degrees swap it.
    let turned = matches!(
        decoder.orientation().map_err(|e| image_error(path, e))?,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    Ok(if turned { (h, w, color) } else { (w, h, color) })
}

/// PIL's `convert("L")`: ITU-R 601-2 luma with PIL's fixed-point rounding,
/// so greyscale matches the PyTorch reference pipeline.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

fn to_grey(img: &DynamicImage) -> GrayImage {
    match img.color() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => img.to_luma8(),
        _ => {
            let rgb = img.to_rgb8();
            GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let p = rgb.get_pixel(x, y).0;
                image::Luma([luma(p[0], p[1], p[2])])
            })
        }
    }
}

fn fit<P: image::Pixel<Subpixel = u8> + 'static>(
    img: image::ImageBuffer<P, Vec<u8>>,
    (th, tw): (u32, u32),
    mode: Fit,
) -> image::ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    if (h, w) == (th, tw) {
        return img;
    }
    if h % th == 0 && w % tw == 0 && (mode == Fit::Stretch || h / th == w / tw) {
        return reduce(&img, (h / th, w / tw));
    }
    match mode {
        Fit::Stretch => imageops::resize(&img, tw, th, FilterType::Triangle),
        Fit::Crop => {
            let scale = (f64::from(th) / f64::from(h)).max(f64::from(tw) / f64::from(w));
            let nw = ((f64::from(w) * scale).round() as u32).max(tw);
            let nh = ((f64::from(h) * scale).round() as u32).max(th);
            let big = imageops::resize(&img, nw, nh, FilterType::Triangle);
            imageops::crop_imm(&big, (nw - tw) / 2, (nh - th) / 2, tw, th).to_image()
        }
    }
}

/// Downscales by whole factors `(fy, fx)`: each output pixel is the mean
/// of its `fy × fx` block, rounded half up (area resampling, as PIL's
/// `Image.reduce`), so no pixel is weighted twice.
fn reduce<P: image::Pixel<Subpixel = u8> + 'static>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    (fy, fx): (u32, u32),
) -> image::ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    let (tw, th) = (w / fx, h / fy);
    let out = match P::CHANNEL_COUNT {
        1 => reduce_channels::<1>(img.as_raw(), w, (fy, fx), (th, tw)),
        3 => reduce_channels::<3>(img.as_raw(), w, (fy, fx), (th, tw)),
        4 => reduce_channels::<4>(img.as_raw(), w, (fy, fx), (th, tw)),
        2 => reduce_channels::<2>(img.as_raw(), w, (fy, fx), (th, tw)),
        c => unreachable!("{c} channels"),
    };
    image::ImageBuffer::from_raw(tw, th, out).expect("buffer of the right size")
}

/// [`reduce`] of `C`-channel rows: each block's rows are summed into one
/// row of sums, read once and in order.
fn reduce_channels<const C: usize>(
    src: &[u8],
    w: u32,
    (fy, fx): (u32, u32),
    (th, tw): (u32, u32),
) -> Vec<u8> {
    let (w, fx, fy, tw) = (w as usize, fx as usize, fy as usize, tw as usize);
    let area = (fy * fx) as u32;
    let mut out = vec![0u8; th as usize * tw * C];
    let mut sums = vec![[0u32; C]; tw]; // [tw][C]
    for (y, out_row) in out.chunks_exact_mut(tw * C).enumerate() {
        sums.iter_mut().for_each(|s| *s = [0; C]);
        for dy in 0..fy {
            let row = &src[(y * fy + dy) * w * C..][..tw * fx * C];
            for (sum, block) in sums.iter_mut().zip(row.chunks_exact(fx * C)) {
                for px in block.chunks_exact(C) {
                    for k in 0..C {
                        sum[k] += u32::from(px[k]);
                    }
                }
            }
        }
        for (o, sum) in out_row.chunks_exact_mut(C).zip(&sums) {
            for k in 0..C {
                o[k] = ((sum[k] + area / 2) / area) as u8;
            }
        }
    }
    out
}

/// Resizes every image of a table read from another source (IDX, CIFAR) to
/// `size` (height, width), as `--size` does for folders.
pub fn resize_set(set: ImageSet, size: (u32, u32), mode: Fit) -> ImageSet {
    let (h, w, c) = (set.meta.height, set.meta.width, set.meta.channels);
    if (h, w) == size {
        return set;
    }
    let n = set.meta.image_len();
    let mut pixels = Vec::with_capacity(set.len() * (size.0 * size.1 * c) as usize);
    for i in 0..set.len() {
        let raw = set.pixels[i * n..(i + 1) * n].to_vec();
        if c == 1 {
            let img = GrayImage::from_raw(w, h, raw).expect("buffer of the right size");
            pixels.extend_from_slice(fit(img, size, mode).as_raw());
        } else {
            let img = RgbImage::from_raw(w, h, raw).expect("buffer of the right size");
            pixels.extend_from_slice(fit(img, size, mode).as_raw());
        }
    }
    let mut meta = set.meta;
    (meta.height, meta.width) = size;
    ImageSet {
        meta,
        pixels,
        ..set
    }
}

/// The most bytes one decoded image may take (the image crate's default
/// limit, which PNG decoding keeps).
const MAX_DECODED_BYTES: usize = 512 << 20;

/// Decodes a whole file exactly, or fails, and turns it as its EXIF
/// orientation says (JPEG, PNG, WebP), as Pillow's `ImageOps.exif_transpose`:
/// phone photos come upright. The image crate's JPEG decoding
/// fills what it cannot read (a file cut short, corrupt entropy-coded data)
/// with grey and returns an image; here such a file is an error, as in
/// Pillow ("image file is truncated"): zune-jpeg, the image crate's own JPEG
/// decoder, in its strict mode, with the image crate's colour handling
/// (grey stays grey, CMYK and YCCK become RGB). PNG's decoder is strict
/// already.
fn decode_exact(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let format = image::guess_format(bytes).map_err(|e| image_error(path, e))?;
    if format != ImageFormat::Jpeg {
        let err = |e| image_error(path, e);
        let mut decoder = ImageReader::with_format(std::io::Cursor::new(bytes), format)
            .into_decoder()
            .map_err(err)?;
        // The image crate's default memory limit, as its own `decode` checks
        // it (a PNG bomb is refused before any allocation).
        image::Limits::default()
            .reserve(decoder.total_bytes())
            .map_err(err)?;
        let orientation = decoder.orientation().map_err(err)?;
        let mut img = DynamicImage::from_decoder(decoder).map_err(err)?;
        img.apply_orientation(orientation);
        return Ok(img);
    }
    use zune_core::colorspace::ColorSpace;
    let jpeg_error = |e: zune_jpeg::errors::DecodeErrors| image_error(path, format!("JPEG: {e}"));
    // zune-jpeg's strict mode still pads the last few bytes of a scan that
    // is cut short; a JPEG must reach its end-of-image marker.
    if !jpeg_reaches_eoi(bytes) {
        return Err(image_error(
            path,
            "JPEG: the file ends before its end-of-image marker (cut short)",
        ));
    }
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder.decode_headers().map_err(jpeg_error)?;
    let (w, h) = decoder.dimensions().expect("headers were decoded");
    let out = match decoder.input_colorspace().expect("headers were decoded") {
        c @ (ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA) => c,
        _ => ColorSpace::RGB,
    };
    if w.saturating_mul(h).saturating_mul(out.num_components()) > MAX_DECODED_BYTES {
        return Err(image_error(
            path,
            format!("JPEG of {w}x{h} is larger than the {MAX_DECODED_BYTES}-byte decoding limit"),
        ));
    }
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(jpeg_error)?;
    let (w, h) = (w as u32, h as u32);
    let img = match out {
        ColorSpace::Luma => GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        ColorSpace::LumaA => {
            image::GrayAlphaImage::from_raw(w, h, pixels).map(DynamicImage::ImageLumaA8)
        }
        ColorSpace::RGBA => image::RgbaImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8),
        _ => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    };
    let mut img =
        img.ok_or_else(|| image_error(path, "JPEG: the decoder returned too few pixels"))?;
    if let Some(o) = decoder.exif().and_then(|e| Orientation::from_exif_chunk(e)) {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Whether a JPEG's marker segments run to its end-of-image marker (EOI):
/// walks the segments by their lengths and each scan's entropy-coded data
/// to the next marker (a stuffed `FF 00` or a restart marker is data).
/// False only when the bytes end first; a structure it cannot follow is
/// left to the decoder to judge. Bytes after the EOI (appended data, as
/// some cameras write) are allowed.
fn jpeg_reaches_eoi(b: &[u8]) -> bool {
    if b.len() < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return true;
    }
    let mut i = 2;
    loop {
        if i >= b.len() {
            return false;
        }
        if b[i] != 0xFF {
            return true;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let Some(len) = b.get(i..i + 2) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return true;
                }
                i += len;
                if marker == 0xDA {
                    loop {
                        if i + 1 >= b.len() {
                            return false;
                        }
                        if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Decodes one file into `out` (HWC); returns the file's MD5.
fn decode_into(
    path: &Path,
    size: (u32, u32),
    channels: u32,
    mode: Fit,
    out: &mut [u8],
) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| PrepError::io(path, e))?;
    let img = decode_exact(path, &bytes)?;
    if channels == 1 {
        out.copy_from_slice(fit(to_grey(&img), size, mode).as_raw());
    } else {
        let rgb: RgbImage = img.to_rgb8();
        out.copy_from_slice(fit(rgb, size, mode).as_raw());
    }
    Ok(md5_bytes(&bytes))
}

/// Decodes the chosen `entries` of the folder at `root` into an image table.
/// A file that cannot be decoded exactly stops the run, or with
/// [`Unreadable::Skip`] is left out and listed; a run that leaves out every
/// file is an error.
pub fn read_folder(
    root: &Path,
    listing: &FolderListing,
    entries: &[FolderEntry],
    opts: &FolderOptions,
    progress: &dyn Progress,
) -> Result<FolderRead> {
    if let Some(c) = opts.channels
        && c != 1
        && c != 3
    {
        return Err(PrepError::invalid(
            root,
            format!("--channels must be 1 or 3, not {c}"),
        ));
    }
    if let Some((h, w)) = opts.size
        && (h == 0 || w == 0)
    {
        return Err(PrepError::invalid(root, "--size must be positive"));
    }
    if entries.is_empty() {
        return Err(PrepError::invalid(root, "no images selected"));
    }
    let mut skipped = Vec::new();
    let listed: Vec<(&FolderEntry, PathBuf)> = entries.iter().map(|e| (e, e.file(root))).collect();
    progress.begin("reading headers", Some(listed.len() as u64), Unit::Images);
    let probed = parallel_each(listed.iter().map(|(_, p)| p).collect(), opts.threads, |p| {
        let r = probe(p);
        progress.advance(1);
        Ok(r)
    })?;
    progress.end();
    let headed = keep(listed, probed, opts.unreadable, &mut skipped)?;
    let Some((first, _, (w0, h0, _))) = headed.first() else {
        return Err(all_skipped(root, &skipped));
    };
    let size = match opts.size {
        Some(s) => s,
        None => {
            if let Some((other, _, (w, h, _))) = headed
                .iter()
                .find(|(_, _, (w, h, _))| (*w, *h) != (*w0, *h0))
            {
                return Err(PrepError::invalid(
                    root,
                    format!(
                        "images have different sizes ({} is {w0}x{h0}, {} is {w}x{h}); pass --size",
                        first.rel, other.rel
                    ),
                ));
            }
            (*h0, *w0)
        }
    };
    let channels = opts.channels.unwrap_or_else(|| {
        let grey = headed.iter().all(|(_, _, (_, _, c))| {
            matches!(
                c,
                ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
            )
        });
        if grey { 1 } else { 3 }
    });
    if size.0 > MAX_SIDE || size.1 > MAX_SIDE {
        return Err(PrepError::invalid(
            root,
            format!(
                "images are {}x{}, more than the {MAX_SIDE} pixels a side an image table holds; pass --size",
                size.0, size.1
            ),
        ));
    }
    let image_len = size.0 as usize * size.1 as usize * channels as usize;
    // The headers' sizes are only claims until the images decode: a table
    // too big for memory is an error, not an abort. The zeroed buffer is
    // then taken from the system lazily, page by page as images decode, so
    // a lying header costs address space, not memory.
    let total = headed.len().saturating_mul(image_len);
    Vec::<u8>::new().try_reserve_exact(total).map_err(|_| {
        PrepError::invalid(
            root,
            format!(
                "{} images of {}x{}x{channels} need {total} bytes, more than this machine can allocate; pass --size",
                headed.len(),
                size.0,
                size.1
            ),
        )
    })?;
    let mut pixels = vec![0u8; total];
    progress.begin("decoding images", Some(headed.len() as u64), Unit::Images);
    let work: Vec<_> = headed
        .iter()
        .map(|(_, p, _)| p)
        .zip(pixels.chunks_mut(image_len))
        .collect();
    let decoded = parallel_each(work, opts.threads, |(p, out)| {
        let r = decode_into(p, size, channels, opts.fit, out);
        progress.advance(1);
        Ok(r)
    })?;
    progress.end();
    let ok: Vec<bool> = decoded.iter().map(|r| r.is_ok()).collect();
    compact_rows(&mut pixels, image_len, &ok);
    let read = keep(
        headed.into_iter().map(|(e, p, _)| (e, p)).collect(),
        decoded,
        opts.unreadable,
        &mut skipped,
    )?;
    if read.is_empty() {
        return Err(all_skipped(root, &skipped));
    }
    skipped.sort_by(|a, b| a.rel.cmp(&b.rel));
    // Exact duplicates, by the MD5 of the file's bytes.
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut kept_rows = vec![true; read.len()];
    for (k, (e, _, sum)) in read.iter().enumerate() {
        match first_of.entry(sum.as_str()) {
            Entry::Occupied(o) => {
                duplicates.push(Duplicate {
                    rel: e.rel.clone(),
                    of: read[*o.get()].0.rel.clone(),
                });
                kept_rows[k] = opts.duplicates == Duplicates::Keep;
            }
            Entry::Vacant(v) => {
                v.insert(k);
            }
        }
    }
    let read = if kept_rows.iter().all(|&k| k) {
        read
    } else {
        compact_rows(&mut pixels, image_len, &kept_rows);
        read.into_iter()
            .zip(&kept_rows)
            .filter_map(|(r, keep)| keep.then_some(r))
            .collect()
    };
    let checksum = listing_checksum(
        read.iter()
            .map(|(e, _, sum)| (e.rel.clone(), sum.clone()))
            .collect(),
    );
    Ok(FolderRead {
        set: ImageSet {
            paths: read
                .iter()
                .map(|(e, _, _)| SourcePath {
                    text: e.rel.clone(),
                    bytes: e.raw.clone(),
                })
                .collect(),
            ..ImageSet::train_only(
                ImageMeta::folder(
                    (size.0, size.1, channels),
                    listing.class_names.clone(),
                    checksum,
                ),
                read.iter().map(|(e, _, _)| e.label).collect(),
                pixels,
            )
        },
        skipped,
        duplicates,
    })
}

/// Moves the rows marked in `keep` up over the others, in order, and drops
/// the tail: `pixels` holds `keep.len()` rows of `image_len` bytes.
fn compact_rows(pixels: &mut Vec<u8>, image_len: usize, keep: &[bool]) {
    let mut row = 0;
    for (k, _) in keep.iter().enumerate().filter(|(_, keep)| **keep) {
        if row != k {
            pixels.copy_within(k * image_len..(k + 1) * image_len, row * image_len);
        }
        row += 1;
    }
    pixels.truncate(row * image_len);
}

/// The entries whose result is a value, in order, with it; each error stops
/// the run or, with [`Unreadable::Skip`], goes to `skipped`.
type Kept<'a, T> = Vec<(&'a FolderEntry, PathBuf, T)>;
fn keep<'a, T>(
    entries: Vec<(&'a FolderEntry, PathBuf)>,
    results: Vec<Result<T>>,
    unreadable_files: Unreadable,
    skipped: &mut Vec<Skipped>,
) -> Result<Kept<'a, T>> {
    let mut kept = Vec::new();
    for ((entry, path), r) in entries.into_iter().zip(results) {
        match r {
            Ok(v) => kept.push((entry, path, v)),
            Err(e) if unreadable_files == Unreadable::Skip => skipped.push(Skipped {
                rel: entry.rel.clone(),
                reason: reason(&e),
            }),
            Err(e) => return Err(unreadable(&path, &e)),
        }
    }
    Ok(kept)
}

fn all_skipped(root: &Path, skipped: &[Skipped]) -> PrepError {
    let first = skipped
        .first()
        .map_or(String::new(), |s| format!(" ({}: {})", s.rel, s.reason));
    PrepError::invalid(
        root,
        format!("none of the {} images could be read{first}", skipped.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_must_reach_its_end_marker() {
        let img = RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 9) as u8, 77])
        });
        let mut jpeg = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        assert!(jpeg_reaches_eoi(&jpeg));
        for cut in 0..jpeg.len() {
            assert!(!jpeg_reaches_eoi(&jpeg[..cut]) || cut < 2, "cut at {cut}");
        }
        // Data appended after the end marker is allowed.
        let mut more = jpeg.clone();
        more.extend_from_slice(b"\xff\xd8 appended video");
        assert!(jpeg_reaches_eoi(&more));
    }

    #[test]
    fn luma_matches_pil() {
        // PIL: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
        assert_eq!(luma(10, 200, 30), 124);
    }

    #[test]
    fn crop_fit_keeps_the_centre() {
        // A 4 wide × 2 high image, left half 0 and right half 200, cropped to
        // 2×2 keeps the middle two columns.
        let img = GrayImage::from_fn(4, 2, |x, _| image::Luma([if x < 2 { 0 } else { 200 }]));
        let out = fit(img, (2, 2), Fit::Crop);
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0).0[0], 0);
        assert_eq!(out.get_pixel(1, 0).0[0], 200);
        let img = GrayImage::from_fn(4, 2, |x, _| image::Luma([x as u8]));
        assert_eq!(fit(img, (1, 1), Fit::Stretch).dimensions(), (1, 1));
    }

    /// Whole-factor downscales average each block (numpy:
    /// `a.reshape(h, f, w, f, c).mean((1, 3))`, rounded half up).
    #[test]
    fn whole_factors_average_blocks() {
        let img = GrayImage::from_raw(4, 2, vec![0, 1, 10, 20, 3, 4, 30, 41]).unwrap();
        let out = fit(img, (1, 2), Fit::Crop);
        assert_eq!(out.as_raw(), &[2, 25]);
        let rgb = RgbImage::from_fn(2, 2, |x, y| image::Rgb([(x + 2 * y) as u8 * 10, 255, 1]));
        let out = fit(rgb.clone(), (1, 1), Fit::Stretch);
        assert_eq!(out.as_raw(), &[15, 255, 1]);
        // A 2x1 factor only stretches: a crop fit keeps the aspect ratio.
        assert_eq!(
            fit(rgb, (1, 2), Fit::Stretch).as_raw(),
            &[10, 255, 1, 20, 255, 1]
        );
    }
}
