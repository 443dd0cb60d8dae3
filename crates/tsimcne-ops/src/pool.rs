//! Global average pooling of NHWC activations, and the images' move into
//! that layout.

use rayon::prelude::*;

/// `[n, c, hw]` → `[n, hw, c]`: images as the network's input (channels
/// first, as stored and augmented) into the kernels' channels-last layout;
/// a pure reordering, one image per task.
pub fn nchw_to_nhwc(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    assert!(n > 0 && c > 0 && x.len().is_multiple_of(n * c));
    let hw = x.len() / (n * c);
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_exact_mut(hw * c)
        .zip(x.par_chunks_exact(hw * c))
        .for_each(|(o, img)| {
            for (ch, plane) in img.chunks_exact(hw).enumerate() {
                for (p, &v) in plane.iter().enumerate() {
                    o[p * c + ch] = v;
                }
            }
        });
    out
}

/// `[n, hw, c]` → `[n, c]`: the mean over the pixels of each image.
pub fn global_avg_pool(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    assert!(n > 0 && c > 0 && x.len().is_multiple_of(n * c));
    let hw = x.len() / (n * c);
    let mut out = vec![0.0f32; n * c];
    for (img, o) in x.chunks_exact(hw * c).zip(out.chunks_exact_mut(c)) {
        let mut acc = vec![0.0f64; c];
        for px in img.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += f64::from(v);
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = (a / hw as f64) as f32;
        }
    }
    out
}

/// The gradient of [`global_avg_pool`]: `dy / hw` spread over the pixels.
pub fn global_avg_pool_backward(dy: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    assert_eq!(dy.len(), n * c);
    let mut dx = vec![0.0f32; n * hw * c];
    let inv = 1.0 / hw as f32;
    for (img, d) in dx.chunks_exact_mut(hw * c).zip(dy.chunks_exact(c)) {
        for px in img.chunks_exact_mut(c) {
            for (p, &d) in px.iter_mut().zip(d) {
                *p = d * inv;
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_to_nhwc_moves_every_value_to_its_pixel() {
        let (n, c, h, w) = (2, 3, 2, 5);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let y = nchw_to_nhwc(&x, n, c);
        for (b, ch, yy, xx) in (0..n).flat_map(|b| {
            (0..c).flat_map(move |ch| {
                (0..h).flat_map(move |yy| (0..w).map(move |xx| (b, ch, yy, xx)))
            })
        }) {
            let src = ((b * c + ch) * h + yy) * w + xx;
            let dst = ((b * h + yy) * w + xx) * c + ch;
            assert_eq!(y[dst], x[src]);
        }
    }
}
