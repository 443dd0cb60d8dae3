//! A synthetic collection for bench/explore.sh: N tiny grey images (4×4,
//! each a few seeded values) in 20 classes, and a 2-D map of 20 Gaussian
//! clusters. Usage: synthetic N DIR (writes DIR/images.parquet and
//! DIR/embedding.parquet).

use std::path::PathBuf;

use tsimcne_format::vectors::write_embedding;
use tsimcne_format::{ImageMeta, ImageSet, write_image_table};
use tsimcne_rng::SplitMix64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, dir): (usize, PathBuf) = match args.as_slice() {
        [_, n, dir] => (n.parse().expect("N is a number"), dir.into()),
        _ => panic!("usage: synthetic N DIR"),
    };
    std::fs::create_dir_all(&dir).expect("making DIR");
    let classes = 20;
    let mut rng = SplitMix64::new(7);
    let labels: Vec<Option<i32>> = (0..n).map(|i| Some((i % classes) as i32)).collect();
    let mut pixels = vec![0u8; n * 16];
    for (i, img) in pixels.chunks_mut(16).enumerate() {
        let base = (i % classes * 12) as u8;
        for p in img.iter_mut() {
            *p = base.wrapping_add(rng.below(24) as u8);
        }
    }
    let mut coords = Vec::with_capacity(2 * n);
    for l in &labels {
        let a = l.unwrap() as f64 * std::f64::consts::TAU / classes as f64;
        coords.push((8.0 * a.cos() + rng.normal()) as f32);
        coords.push((8.0 * a.sin() + rng.normal()) as f32);
    }
    let class_names = (0..classes).map(|c| format!("class {c}")).collect();
    let checksum = "md5:00000000000000000000000000000000".into();
    let meta = ImageMeta::folder((4, 4, 1), class_names, checksum);
    let set = ImageSet::train_only(meta, labels.clone(), pixels);
    write_image_table(&dir.join("images.parquet"), &set).expect("writing the image table");
    let ids: Vec<u32> = (0..n as u32).collect();
    write_embedding(
        &dir.join("embedding.parquet"),
        &ids,
        &labels,
        2,
        &coords,
        &[],
    )
    .expect("writing the embedding");
}
