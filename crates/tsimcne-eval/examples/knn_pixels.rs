//! Times the exact pixel-space neighbour search on an image table:
//! `cargo run --release -p tsimcne-eval --example knn_pixels IMAGES [QUERIES] [THREADS]`.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::Path::new(&args[1]);
    let queries: usize = args.get(2).map_or(10_000, |s| s.parse().unwrap());
    let threads: usize = args.get(3).map_or(2, |s| s.parse().unwrap());
    let t = Instant::now();
    let images = tsimcne_format::read_image_table(path).unwrap();
    eprintln!(
        "read {} images in {:.2} s",
        images.len(),
        t.elapsed().as_secs_f64()
    );
    let n = images.len();
    let all: Vec<u32> = (0..n as u32).collect();
    let q = tsimcne_eval::split::sample(n, queries, 0);
    let data = tsimcne_eval::Data::U8 {
        dim: images.meta.image_len(),
        values: &images.pixels,
    };
    let t = Instant::now();
    let nb = tsimcne_eval::knn::k_nearest(data, &all, &q, 15, threads);
    eprintln!(
        "{} queries × {n} points: {:.2} s ({})",
        q.len(),
        t.elapsed().as_secs_f64(),
        nb.len()
    );
}
