//! Global average pooling of NHWC activations.

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
