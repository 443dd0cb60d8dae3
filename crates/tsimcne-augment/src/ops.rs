//! The pixel operations, on f32 CHW planes, following torchvision's tensor
//! implementations formula by formula.

/// Resampling weights for one axis: PIL's (and torch's `antialias=True`)
/// triangle filter, widened by the scale when shrinking.
struct Axis {
    starts: Vec<usize>,
    taps: usize,
    /// `out_size × taps` weights, zero-padded past each window's end.
    weights: Vec<f32>,
}

fn axis(in_size: usize, out_size: usize) -> Axis {
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let taps = (support.ceil() as usize) * 2 + 1;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = vec![0f32; out_size * taps];
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        // C casts truncate toward zero, as in the reference.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(taps);
        let w = &mut weights[i * taps..i * taps + n];
        let mut total = 0.0;
        for (j, wj) in w.iter_mut().enumerate() {
            let x = (j as f64 + xmin as f64 - center + 0.5) * invscale;
            let v = (1.0 - x.abs()).max(0.0);
            *wj = v as f32;
            total += v;
        }
        if total > 0.0 {
            w.iter_mut()
                .for_each(|v| *v = (f64::from(*v) / total) as f32);
        }
        starts.push(xmin);
    }
    Axis {
        starts,
        taps,
        weights,
    }
}

/// Resizes `c` planes of `ih × iw` to `oh × ow` (bilinear, antialiased, as
/// `torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)`):
/// first along the width into `tmp`, then along the height into `out`.
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear_aa(
    input: &[f32],
    c: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    let ax = axis(iw, ow);
    let ay = axis(ih, oh);
    tmp.clear();
    tmp.resize(c * ih * ow, 0.0);
    for (src, dst) in input.chunks_exact(iw).zip(tmp.chunks_exact_mut(ow)) {
        for (x, d) in dst.iter_mut().enumerate() {
            let s = ax.starts[x];
            let w = &ax.weights[x * ax.taps..(x + 1) * ax.taps];
            let n = (iw - s).min(ax.taps);
            *d = src[s..s + n].iter().zip(w).map(|(a, b)| a * b).sum();
        }
    }
    for k in 0..c {
        let src = &tmp[k * ih * ow..(k + 1) * ih * ow];
        let dst = &mut out[k * oh * ow..(k + 1) * oh * ow];
        for y in 0..oh {
            let s = ay.starts[y];
            let w = &ay.weights[y * ay.taps..(y + 1) * ay.taps];
            let n = (ih - s).min(ay.taps);
            let row = &mut dst[y * ow..(y + 1) * ow];
            row.fill(0.0);
            for (t, &wt) in w[..n].iter().enumerate() {
                if wt == 0.0 {
                    continue;
                }
                let srow = &src[(s + t) * ow..(s + t + 1) * ow];
                row.iter_mut().zip(srow).for_each(|(o, v)| *o += wt * v);
            }
        }
    }
}

/// torchvision's `_blend(img, other, ratio)` with a constant `other`, clamped to [0, 1].
pub fn blend_scalar(img: &mut [f32], ratio: f32, other: f32) {
    let keep = 1.0 - ratio;
    img.iter_mut()
        .for_each(|v| *v = (ratio * *v + keep * other).clamp(0.0, 1.0));
}

fn grey(r: f32, g: f32, b: f32) -> f32 {
    0.2989 * r + 0.587 * g + 0.114 * b
}

/// Mean of the greyscale image of the CHW RGB `img` (plane size `plane`).
pub fn grey_mean(img: &[f32], plane: usize) -> f32 {
    let (r, rest) = img.split_at(plane);
    let (g, b) = rest.split_at(plane);
    let sum: f64 = (0..plane).map(|p| f64::from(grey(r[p], g[p], b[p]))).sum();
    (sum / plane as f64) as f32
}

fn planes(img: &mut [f32], plane: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (r, rest) = img.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    (r, g, b)
}

/// `_blend(img, rgb_to_grayscale(img), factor)`.
pub fn adjust_saturation(img: &mut [f32], plane: usize, factor: f32) {
    let keep = 1.0 - factor;
    let (r, g, b) = planes(img, plane);
    for p in 0..plane {
        let l = grey(r[p], g[p], b[p]);
        r[p] = (factor * r[p] + keep * l).clamp(0.0, 1.0);
        g[p] = (factor * g[p] + keep * l).clamp(0.0, 1.0);
        b[p] = (factor * b[p] + keep * l).clamp(0.0, 1.0);
    }
}

/// Replaces RGB by its greyscale in all three channels.
pub fn to_grey3(img: &mut [f32], plane: usize) {
    let (r, g, b) = planes(img, plane);
    for p in 0..plane {
        let l = grey(r[p], g[p], b[p]);
        (r[p], g[p], b[p]) = (l, l, l);
    }
}

/// torchvision's `_rgb2hsv` for one pixel.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0) % 1.0, s, maxc)
}

/// torchvision's `_hsv2rgb` for one pixel.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Shifts the hue by `factor` (a fraction of the colour circle).
pub fn adjust_hue(img: &mut [f32], plane: usize, factor: f32) {
    let (r, g, b) = planes(img, plane);
    for p in 0..plane {
        let (h, s, v) = rgb_to_hsv(r[p], g[p], b[p]);
        let h = (h + factor).rem_euclid(1.0);
        (r[p], g[p], b[p]) = hsv_to_rgb(h, s, v);
    }
}
