//! Helpers shared by the backbone tests (fast.rs, cuda_fast.rs).

use candle_core::Tensor;

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
