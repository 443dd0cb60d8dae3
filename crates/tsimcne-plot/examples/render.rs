//! Renders synthetic gaussian-blob maps to /tmp: a 10-class map with
//! thumbnails (`plot-10`), a 100-class map (`plot-100`), a 70,000-point
//! map (`plot-70k`), a 300-point map (`plot-300`) and a half-unlabelled map
//! (`plot-partial`), each as PNG and SVG, and prints how long each took.
//!
//! `cargo run --release -p tsimcne-plot --example render`

use std::time::Instant;

use tsimcne_data::idx::FASHION_MNIST_CLASSES as FASHION;
use tsimcne_plot::{Map, Style, Thumbnail, render_png, render_svg};
use tsimcne_rng::SplitMix64;

const CIFAR100: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// `n` points in `k` blobs, each blob an anisotropic gaussian at a random
/// place with a random orientation; labels cycle through the blobs.
fn blobs(n: usize, k: usize, seed: u64) -> (Vec<[f32; 2]>, Vec<Option<u32>>) {
    let mut rng = SplitMix64::keyed(&[seed]);
    let spread = (k as f64).sqrt() * 12.0;
    let centres: Vec<[f64; 5]> = (0..k)
        .map(|_| {
            let angle = rng.uniform(0.0, std::f64::consts::PI);
            [
                rng.uniform(-spread, spread),
                rng.uniform(-spread, spread),
                rng.uniform(2.0, 6.0),
                rng.uniform(0.7, 2.0),
                angle,
            ]
        })
        .collect();
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        let [cx, cy, sx, sy, a] = centres[c];
        let (u, v) = (rng.normal() * sx, rng.normal() * sy);
        points.push([
            (cx + u * a.cos() - v * a.sin()) as f32,
            (cy + u * a.sin() + v * a.cos()) as f32,
        ]);
        labels.push(Some(c as u32));
    }
    (points, labels)
}

/// A 28×28 grey "image": a ring whose size depends on `i`.
fn thumb(point: usize, i: usize) -> Thumbnail {
    let mut pixels = vec![0u8; 28 * 28];
    for y in 0..28 {
        for x in 0..28 {
            let d = ((x as f32 - 13.5).powi(2) + (y as f32 - 13.5).powi(2)).sqrt();
            let r = 5.0 + (i % 6) as f32;
            pixels[y * 28 + x] = (255.0 * (1.0 - ((d - r).abs() / 2.5).min(1.0))) as u8;
        }
    }
    Thumbnail {
        point,
        height: 28,
        width: 28,
        channels: 1,
        pixels,
    }
}

fn render(name: &str, map: &Map<'_>) {
    let style = Style::default();
    let t = Instant::now();
    let png = render_png(map, &style).expect("png");
    let png_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let svg = render_svg(map, &style).expect("svg");
    let svg_s = t.elapsed().as_secs_f64();
    std::fs::write(format!("/tmp/{name}.png"), &png).expect("write png");
    std::fs::write(format!("/tmp/{name}.svg"), &svg).expect("write svg");
    println!(
        "{name}: {} points, png {:.0} ms ({} KiB), svg {:.0} ms ({} KiB)",
        map.points.len(),
        png_s * 1e3,
        png.len() / 1024,
        svg_s * 1e3,
        svg.len() / 1024
    );
}

fn main() {
    let fashion: Vec<String> = FASHION.iter().map(|s| s.to_string()).collect();
    let cifar: Vec<String> = CIFAR100.iter().map(|s| s.to_string()).collect();

    let (points, labels) = blobs(5_000, 10, 1);
    let thumbnails: Vec<Thumbnail> = (0..12).map(|i| thumb(i * 397, i)).collect();
    let map = Map {
        points: &points,
        labels: &labels,
        class_names: &fashion,
        title: Some("finetune \u{b7} kNN@15 0.812"),
        thumbnails: &thumbnails,
    };
    render("plot-10", &map);

    let (points, labels) = blobs(20_000, 100, 2);
    let map = Map {
        points: &points,
        labels: &labels,
        class_names: &cifar,
        title: Some("CIFAR-100 \u{b7} 100 classes"),
        thumbnails: &[],
    };
    render("plot-100", &map);

    let (points, labels) = blobs(70_000, 10, 3);
    let map = Map {
        points: &points,
        labels: &labels,
        class_names: &fashion,
        title: Some("70,000 points"),
        thumbnails: &[],
    };
    render("plot-70k", &map);

    let (points, labels) = blobs(300, 10, 4);
    let map = Map {
        points: &points,
        labels: &labels,
        class_names: &[],
        title: None,
        thumbnails: &[],
    };
    render("plot-300", &map);

    let (points, mut labels) = blobs(10_000, 20, 5);
    for l in labels.iter_mut().step_by(2) {
        *l = None;
    }
    let map = Map {
        points: &points,
        labels: &labels,
        class_names: &[],
        title: Some("20 classes, half unlabelled"),
        thumbnails: &[],
    };
    render("plot-partial", &map);
}
