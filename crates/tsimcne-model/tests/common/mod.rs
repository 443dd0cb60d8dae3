//! Helpers shared by the backbone tests (fast.rs, cuda_fast.rs).

use candle_core::Tensor;
use tsimcne_model::ResNetArch;

/// A backbone of `widths` and `blocks` with a small head (24 → 5).
pub fn arch(in_channels: usize, widths: Vec<usize>, blocks: Vec<usize>) -> ResNetArch {
    ResNetArch {
        in_channels,
        widths,
        blocks,
        head_hidden: 24,
        out_dim: 5,
    }
}

/// `n` images `[c, h, w]` of values in [-1, 1], a hash of `seed` and the index.
pub fn image_values(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    (0..n * c * h * w)
        .map(|i| {
            let r = (i as u64 ^ seed.wrapping_mul(0x2545_F491)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 40;
            (r % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// A loss that weighs every output differently.
pub fn loss(z: &Tensor) -> candle_core::Result<Tensor> {
    let (n, d) = z.dims2()?;
    let w: Vec<f32> = (0..n * d)
        .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let w = Tensor::from_vec(w, (n, d), z.device())?;
    (z * &w)?.sum_all()? + z.sqr()?.mean_all()?
}

/// Asserts |a − b| ≤ rel · max |b| elementwise; `names` say which path
/// gave `a` and which `b`.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, rel: f32, names: (&str, &str)) {
    assert_eq!(a.dims(), b.dims(), "{what}");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{i}]: {} {x} vs {} {y} (scale {scale})",
            names.0,
            names.1
        );
    }
}
