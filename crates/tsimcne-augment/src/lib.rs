//! The SimCLR augmentations of t-SimCNE, on u8 HWC images, producing f32
//! CHW views in `[0, 1]` (optionally normalised):
//!
//! RandomResizedCrop (area scale U(0.2, 1), log-uniform aspect ratio in
//! [3/4, 4/3], 10 tries then a centre crop, bilinear with antialiasing) ·
//! horizontal flip p = 0.5 · with p = 0.8 ColorJitter(0.4, 0.4, 0.4, 0.1),
//! the four in random order · RandomGrayscale p = 0.2.
//!
//! The operations follow torchvision's tensor implementations (float
//! arithmetic, no rounding to u8 between steps); `tests/golden` checks them
//! against torchvision given the same parameters.
//!
//! **Invariant:** a view depends only on (seed, epoch, image id, view index):
//! its parameters come from `SplitMix64::keyed([seed, epoch, id, view])`,
//! never from a shared stream, so thread scheduling cannot change it.

mod ops;

pub use ops::{hsv_to_rgb, resize_bilinear_aa, rgb_to_hsv};
use tsimcne_rng::SplitMix64;

/// The augmentation settings; the defaults are the recipe's.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    pub crop_scale: (f64, f64),
    pub crop_ratio: (f64, f64),
    pub flip_p: f64,
    pub jitter_p: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub grayscale_p: f64,
    /// Per-channel (mean, std) applied after the augmentations; `None` keeps
    /// `[0, 1]` (the released library's choice).
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_scale: (0.2, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            normalize: None,
        }
    }
}

/// The colour-jitter part of one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    /// Order of (0 brightness, 1 contrast, 2 saturation, 3 hue).
    pub order: [u8; 4],
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

/// Everything random about one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewParams {
    /// Crop (top, left, height, width) in the source image.
    pub crop: (usize, usize, usize, usize),
    pub flip: bool,
    pub jitter: Option<Jitter>,
    pub grayscale: bool,
}

/// Shape of the images: height, width, channels (1 or 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Python's `round`: halves to even.
fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params`, on our stream.
pub fn sample_crop(
    rng: &mut SplitMix64,
    height: usize,
    width: usize,
    cfg: &AugmentConfig,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (lr0, lr1) = (cfg.crop_ratio.0.ln(), cfg.crop_ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(cfg.crop_scale.0, cfg.crop_scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = round_half_even((target * aspect).sqrt());
        let h = round_half_even((target / aspect).sqrt());
        if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
            let (h, w) = (h as usize, w as usize);
            let i = rng.below(height - h + 1);
            let j = rng.below(width - w + 1);
            return (i, j, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < cfg.crop_ratio.0 {
        (
            round_half_even(width as f64 / cfg.crop_ratio.0) as usize,
            width,
        )
    } else if in_ratio > cfg.crop_ratio.1 {
        (
            height,
            round_half_even(height as f64 * cfg.crop_ratio.1) as usize,
        )
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Draws the parameters of one view.
pub fn sample_params(rng: &mut SplitMix64, shape: Shape, cfg: &AugmentConfig) -> ViewParams {
    let crop = sample_crop(rng, shape.height, shape.width, cfg);
    let flip = rng.chance(cfg.flip_p);
    let jitter = rng.chance(cfg.jitter_p).then(|| {
        let mut order = [0u8, 1, 2, 3];
        for k in (1..4).rev() {
            order.swap(k, rng.below(k + 1));
        }
        let factor = |rng: &mut SplitMix64, s: f64| rng.uniform((1.0 - s).max(0.0), 1.0 + s) as f32;
        Jitter {
            order,
            brightness: factor(rng, cfg.brightness),
            contrast: factor(rng, cfg.contrast),
            saturation: factor(rng, cfg.saturation),
            hue: rng.uniform(-cfg.hue, cfg.hue) as f32,
        }
    });
    let grayscale = rng.chance(cfg.grayscale_p);
    ViewParams {
        crop,
        flip,
        jitter,
        grayscale,
    }
}

impl AugmentConfig {
    /// Whether every view of a `shape` image is the image itself or its
    /// mirror image: crops of the whole area (on a square image, whatever the
    /// aspect ratio drawn, the crop is then the whole image), no colour
    /// jitter, no greyscale conversion of colour images. Such views can be
    /// computed once per image and flip ([`view_flip`] says which).
    pub fn flips_only(&self, shape: Shape) -> bool {
        self.crop_scale.0 >= 1.0
            && self.crop_ratio.0 <= 1.0
            && self.crop_ratio.1 >= 1.0
            && shape.height == shape.width
            && self.jitter_p <= 0.0
            && (shape.channels == 1 || self.grayscale_p <= 0.0)
    }
}

/// `i32`s a view's parameters take in [`pack_view`].
pub const VIEW_INTS: usize = 12;
/// `f32`s a view's parameters take in [`pack_view`].
pub const VIEW_FLOATS: usize = 4;

/// View parameters `p` of row `image` of an image table as the GPU's
/// augmentation kernel reads them (tsimcne-model `src/cuda/augment.cu`):
/// `[image, top, left, height, width, flip, grayscale, jitter, order…]`
/// and `[brightness, contrast, saturation, hue]` (zeros without jitter).
pub fn pack_view(image: usize, p: &ViewParams) -> ([i32; VIEW_INTS], [f32; VIEW_FLOATS]) {
    let (top, left, h, w) = p.crop;
    let j = p.jitter.unwrap_or(Jitter {
        order: [0, 1, 2, 3],
        brightness: 0.0,
        contrast: 0.0,
        saturation: 0.0,
        hue: 0.0,
    });
    let int = |v: usize| i32::try_from(v).expect("image tables index and size images in i32");
    let o = j.order.map(i32::from);
    (
        [
            int(image),
            int(top),
            int(left),
            int(h),
            int(w),
            i32::from(p.flip),
            i32::from(p.grayscale),
            i32::from(p.jitter.is_some()),
            o[0],
            o[1],
            o[2],
            o[3],
        ],
        [j.brightness, j.contrast, j.saturation, j.hue],
    )
}

/// The packed parameters ([`pack_view`]) of the `2N` views that
/// [`two_views_of`] makes of a batch, in its order (first views, then
/// second views): view 0 of image row `first[i]` and view 1 of row
/// `second[i]`, both drawn from the streams of `ids[i]`. The GPU's
/// augmentation kernel applied to them gives `two_views_of`'s bits.
#[allow(clippy::too_many_arguments)]
pub fn pack_two_views(
    first: &[usize],
    second: &[usize],
    ids: &[u64],
    shape: Shape,
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
) -> (Vec<i32>, Vec<f32>) {
    let n = first.len();
    assert!(
        second.len() == n && ids.len() == n,
        "a batch's rows and ids"
    );
    let mut ints = Vec::with_capacity(2 * n * VIEW_INTS);
    let mut floats = Vec::with_capacity(2 * n * VIEW_FLOATS);
    for (view, rows) in [first, second].into_iter().enumerate() {
        for (&row, &id) in rows.iter().zip(ids) {
            let (a, b) = pack_view(row, &view_params(seed, epoch, id, view as u64, shape, cfg));
            ints.extend(a);
            floats.extend(b);
        }
    }
    (ints, floats)
}

/// Whether view `view` of image `id` in `epoch` is mirrored: the flip that
/// [`two_views_of`] draws for it.
pub fn view_flip(
    seed: u64,
    epoch: u64,
    id: u64,
    view: u64,
    shape: Shape,
    cfg: &AugmentConfig,
) -> bool {
    view_params(seed, epoch, id, view, shape, cfg).flip
}

/// The parameters of view `view` of image `id` in `epoch`: what
/// [`two_views_of`] draws for it, from [`view_stream`].
pub fn view_params(
    seed: u64,
    epoch: u64,
    id: u64,
    view: u64,
    shape: Shape,
    cfg: &AugmentConfig,
) -> ViewParams {
    sample_params(&mut view_stream(seed, epoch, id, view), shape, cfg)
}

/// The stream of view `view` of image `id` in `epoch`.
pub fn view_stream(seed: u64, epoch: u64, id: u64, view: u64) -> SplitMix64 {
    SplitMix64::keyed(&[seed, epoch, id, view])
}

/// Reusable buffers for [`apply`], so the hot loop does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Applies `p` to the u8 HWC `image` of `shape`, writing an f32 CHW view of
/// the same shape into `out`.
pub fn apply(
    image: &[u8],
    shape: Shape,
    p: &ViewParams,
    cfg: &AugmentConfig,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    assert_eq!(image.len(), shape.len(), "image size");
    assert_eq!(out.len(), shape.len(), "output size");
    // Crop → CHW f32 in [0, 1].
    let (ci, cj, ch, cw) = p.crop;
    scratch.a.clear();
    scratch.a.resize(c * ch * cw, 0.0);
    for y in 0..ch {
        let row = &image[((ci + y) * w + cj) * c..((ci + y) * w + cj + cw) * c];
        for x in 0..cw {
            for k in 0..c {
                scratch.a[(k * ch + y) * cw + x] = f32::from(row[x * c + k]) / 255.0;
            }
        }
    }
    // Resize to (h, w), bilinear with antialiasing.
    resize_bilinear_aa(&scratch.a, c, ch, cw, h, w, &mut scratch.b, out);
    if p.flip {
        for row in out.chunks_exact_mut(w) {
            row.reverse();
        }
    }
    let plane = h * w;
    if let Some(j) = p.jitter {
        for &op in &j.order {
            match op {
                0 => ops::blend_scalar(out, j.brightness, 0.0),
                1 => {
                    let mean = if c == 3 {
                        ops::grey_mean(out, plane)
                    } else {
                        out.iter().sum::<f32>() / out.len() as f32
                    };
                    ops::blend_scalar(out, j.contrast, mean);
                }
                2 if c == 3 => ops::adjust_saturation(out, plane, j.saturation),
                3 if c == 3 => ops::adjust_hue(out, plane, j.hue),
                _ => {} // saturation and hue do nothing to one channel
            }
        }
    }
    if p.grayscale && c == 3 {
        ops::to_grey3(out, plane);
    }
    if let Some((mean, std)) = &cfg.normalize {
        for (k, chan) in out.chunks_exact_mut(plane).enumerate() {
            let (m, s) = (mean[k], std[k]);
            chan.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
    }
}

/// The un-augmented view used to embed images: f32 CHW, `[0, 1]` or normalised.
pub fn plain(image: &[u8], shape: Shape, cfg: &AugmentConfig, out: &mut [f32]) {
    let (plane, c) = (shape.height * shape.width, shape.channels);
    for (p, px) in image.chunks_exact(c).enumerate() {
        for k in 0..c {
            out[k * plane + p] = f32::from(px[k]) / 255.0;
        }
    }
    if let Some((mean, std)) = &cfg.normalize {
        for (k, chan) in out.chunks_exact_mut(plane).enumerate() {
            chan.iter_mut().for_each(|v| *v = (*v - mean[k]) / std[k]);
        }
    }
}

/// Two views of every image of a batch, written as `[2N, C, H, W]`: first
/// views of all images, then second views (the layout the loss expects).
/// Runs on `threads` threads; the result does not depend on their number.
#[allow(clippy::too_many_arguments)]
pub fn two_views(
    images: &[&[u8]],
    ids: &[u64],
    shape: Shape,
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
    threads: usize,
    out: &mut [f32],
) {
    two_views_of(images, images, ids, shape, cfg, seed, epoch, threads, out);
}

/// [`two_views`] with the second view of image `i` made from `second[i]`
/// instead of `images[i]` (a positive partner other than the image itself,
/// e.g. one of its nearest neighbours). Both views' parameters still come
/// from the streams of `ids[i]`, so `second == images` is [`two_views`].
#[allow(clippy::too_many_arguments)]
pub fn two_views_of(
    images: &[&[u8]],
    second: &[&[u8]],
    ids: &[u64],
    shape: Shape,
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
    threads: usize,
    out: &mut [f32],
) {
    let n = images.len();
    assert_eq!(second.len(), n, "second views");
    let len = shape.len();
    assert_eq!(out.len(), 2 * n * len, "output size");
    let jobs: Vec<(usize, &mut [f32])> = out.chunks_exact_mut(len).enumerate().collect();
    let per = jobs.len().div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<(usize, &mut [f32])>> = Vec::new();
    let mut it = jobs.into_iter().peekable();
    while it.peek().is_some() {
        runs.push(it.by_ref().take(per).collect());
    }
    std::thread::scope(|s| {
        for run in runs {
            s.spawn(move || {
                let mut scratch = Scratch::default();
                for (k, slot) in run {
                    let (view, i) = (k / n, k % n);
                    let p = view_params(seed, epoch, ids[i], view as u64, shape, cfg);
                    let image = if view == 0 { images[i] } else { second[i] };
                    apply(image, shape, &p, cfg, &mut scratch, slot);
                }
            });
        }
    });
}
