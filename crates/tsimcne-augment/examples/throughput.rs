//! Augmentation throughput: `cargo run --release -p tsimcne-augment --example
//! throughput [THREADS]`. Prints augmented 32×32×3 views per second (two
//! views of each of 512 images per batch, 40 batches, best of 3).

use std::time::Instant;

use tsimcne_augment::{AugmentConfig, Shape, two_views};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let shape = Shape {
        height: 32,
        width: 32,
        channels: 3,
    };
    let n = 512;
    let images: Vec<Vec<u8>> = (0..n)
        .map(|k| {
            (0..shape.len())
                .map(|p| ((p * 31 + k * 17) % 251) as u8)
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    let cfg = AugmentConfig::default();
    let mut out = vec![0f32; 2 * n * shape.len()];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for epoch in 0..40 {
            two_views(&refs, &ids, shape, &cfg, 0, epoch, threads, &mut out);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let views = (40 * 2 * n) as f64;
    println!("{:.0} views/s (32x32x3, {threads} threads)", views / best);
}
