//! End-to-end tests of `evaluate`: the real binary on a small Fashion-MNIST
//! table, with embeddings and reference tables written here.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use tsimcne_format::vectors::{KIND_FEATURES, VectorColumn, write_embedding, write_vectors};

const PREP: &str = "prep";
const EVALUATE: &str = "evaluate";

/// 400 Fashion-MNIST images with both splits (the embedded test set serves
/// as both), and their pixels.
fn images(dir: &Path) -> (PathBuf, tsimcne_format::ImageSet) {
    let src = repo_root().join("data/fashion-mnist");
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (from, to) in [("t10k", "t10k"), ("t10k", "train")] {
        for kind in ["images-idx3", "labels-idx1"] {
            std::fs::copy(
                src.join(format!("{from}-{kind}-ubyte.gz")),
                raw.join(format!("{to}-{kind}-ubyte.gz")),
            )
            .unwrap();
        }
    }
    let out = dir.join("images.parquet");
    let r = run(
        PREP,
        &[
            "fashion-mnist",
            "--input",
            s(&raw),
            "--limit",
            "400",
            "--out",
            s(&out),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let set = tsimcne_format::read_image_table(&out).unwrap();
    (out, set)
}

/// A crude 2-D map of the images: brightness of the top and bottom halves.
fn halves(set: &tsimcne_format::ImageSet) -> Vec<f32> {
    (0..set.len())
        .flat_map(|i| {
            let img = set.image(i);
            let h = img.len() / 2;
            let mean = |p: &[u8]| p.iter().map(|&v| f32::from(v)).sum::<f32>() / p.len() as f32;
            [mean(&img[..h]), mean(&img[h..])]
        })
        .collect()
}

fn embedding(path: &Path, ids: &[u32], coords: &[f32]) {
    let labels = vec![None; ids.len()];
    write_embedding(path, ids, &labels, 2, coords, &[]).unwrap();
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn evaluate_writes_metrics_and_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (imgs, set) = images(dir);
    let n = set.len() as u32;
    let ids: Vec<u32> = (0..n).rev().collect(); // any row order
    let coords = halves(&set);
    let rev: Vec<f32> = ids
        .iter()
        .flat_map(|&i| coords[2 * i as usize..2 * i as usize + 2].to_vec())
        .collect();
    let emb = dir.join("embedding.parquet");
    embedding(&emb, &ids, &rev);
    // A 40-D reference: coarse column sums of the pixels.
    let feats: Vec<f32> = (0..set.len())
        .flat_map(|i| {
            let img = set.image(i).to_vec();
            (0..40).map(move |c| {
                img.iter()
                    .skip(c)
                    .step_by(40)
                    .map(|&v| f32::from(v))
                    .sum::<f32>()
            })
        })
        .collect();
    let fpath = dir.join("features.parquet");
    let all: Vec<u32> = (0..n).collect();
    write_vectors(
        &fpath,
        KIND_FEATURES,
        &all,
        &[VectorColumn {
            name: "cols",
            dim: 40,
            values: &feats,
        }],
        &[],
    )
    .unwrap();

    let out = dir.join("eval");
    let feat_ref = format!("{}:cols", s(&fpath));
    let args = [
        "--embedding",
        s(&emb),
        "--images",
        s(&imgs),
        "--reference",
        "pixels",
        "--reference",
        &feat_ref,
        "--out",
        s(&out),
        "--threads",
        "2",
        "--thumbnails",
        "5",
        "--reference-knn",
    ];
    let r = run(EVALUATE, &args);
    assert!(r.ok(), "{}", r.stderr);
    assert!(r.stdout.contains("kNN@15 hold-out"), "{}", r.stdout);
    let m = metrics(&out);
    assert_eq!(m["n_points"], 400);
    assert_eq!(m["k"], 15);
    assert_eq!(m["dim"], 2);
    let acc = &m["knn_accuracy"];
    let tt = acc["train_test"].as_f64().unwrap();
    let h = &acc["holdout"];
    assert_eq!(h["repeats"], 5);
    assert_eq!(h["test_size"], 80); // 20% of 400
    let mean = h["mean"].as_f64().unwrap();
    // Better than chance (0.1) on a crude map, below pixel space.
    assert!(tt > 0.2 && mean > 0.2 && mean < 1.0, "{m}");
    let vals: Vec<f64> = h["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(vals.len(), 5);
    assert!((vals.iter().sum::<f64>() / 5.0 - mean).abs() < 1e-12);
    for name in ["pixels", "cols"] {
        let p = m["neighbor_preservation"][name].as_f64().unwrap();
        assert!(p > 0.0 && p < 1.0, "{name}: {p}");
        let a = m["reference_knn_accuracy"][name]["holdout"]["mean"]
            .as_f64()
            .unwrap();
        assert!(a > 0.1 && a <= 1.0, "{name}: {a}");
    }
    // Pixel space is the upper bound the crude map falls short of.
    let px = m["reference_knn_accuracy"]["pixels"]["holdout"]["mean"]
        .as_f64()
        .unwrap();
    assert!(px > mean, "pixels {px} vs map {mean}");
    assert_eq!(m["neighbor_preservation_queries"], 400);
    let png = image::open(out.join("map.png")).unwrap();
    assert_eq!((png.width(), png.height()), (1600, 1200));
    let svg = std::fs::read_to_string(out.join("map.svg")).unwrap();
    assert!(svg.contains("Ankle boot") && svg.contains("T-shirt/top"));
    assert!(svg.matches("<circle").count() >= 400);

    // Deterministic: a rerun (other thread count) gives the same metrics.
    let out2 = dir.join("eval2");
    let mut args2 = args.to_vec();
    args2[9] = s(&out2);
    args2[11] = "1";
    assert!(run(EVALUATE, &args2).ok());
    let mut m2 = metrics(&out2);
    let mut m1 = m.clone();
    m1["seconds"] = 0.into();
    m2["seconds"] = 0.into();
    assert_eq!(m1, m2);

    // --sample: neighbour preservation over a seeded subset of queries.
    let out3 = dir.join("eval3");
    let r = run(
        EVALUATE,
        &[
            "--embedding",
            s(&emb),
            "--images",
            s(&imgs),
            "--reference",
            "pixels",
            "--sample",
            "100",
            "--out",
            s(&out3),
            "--no-plot",
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    assert_eq!(metrics(&out3)["neighbor_preservation_queries"], 100);
    assert!(!out3.join("map.png").exists());
}

#[test]
fn bad_inputs_get_one_line_errors_and_keep_earlier_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (imgs, set) = images(dir);
    let n = set.len() as u32;
    let coords = halves(&set);
    let all: Vec<u32> = (0..n).collect();
    let good = dir.join("good.parquet");
    embedding(&good, &all, &coords);
    let out = dir.join("eval");
    let base = |emb: &Path| {
        vec![
            "--embedding".to_string(),
            s(emb).to_string(),
            "--images".into(),
            s(&imgs).into(),
            "--out".into(),
            s(&out).into(),
            "--no-plot".into(),
        ]
    };
    let go = |args: Vec<String>| {
        run(
            EVALUATE,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    assert!(go(base(&good)).ok());
    let before = std::fs::read(out.join("metrics.json")).unwrap();

    // No shared ids.
    let far = dir.join("far.parquet");
    embedding(&far, &(1000..1000 + n).collect::<Vec<_>>(), &coords);
    go(base(&far)).assert_user_error("far.parquet", &["shares no ids"]);
    // Only some.
    let some = dir.join("some.parquet");
    embedding(&some, &(0..300).collect::<Vec<_>>(), &coords[..600]);
    go(base(&some)).assert_user_error("some.parquet", &["300 ids", "only 300 are shared"]);
    // NaN coordinates.
    let nan = dir.join("nan.parquet");
    let mut bad = coords.clone();
    bad[2 * 17 + 1] = f32::NAN;
    bad[2 * 30] = f32::INFINITY;
    embedding(&nan, &all, &bad);
    go(base(&nan)).assert_user_error("nan.parquet", &["2 points have NaN", "id 17"]);
    // k too large.
    let mut a = base(&good);
    a.extend(["--k".into(), "400".into()]);
    go(a).assert_user_error("good.parquet", &["k = 400", "400"]);
    // A reference with other ids.
    let fpath = dir.join("features.parquet");
    let v: Vec<f32> = (0..100 * 4).map(|i| i as f32).collect();
    write_vectors(
        &fpath,
        KIND_FEATURES,
        &(0..100).collect::<Vec<_>>(),
        &[VectorColumn {
            name: "head",
            dim: 4,
            values: &v,
        }],
        &[],
    )
    .unwrap();
    let mut a = base(&good);
    a.extend(["--reference".into(), format!("{}:head", s(&fpath))]);
    go(a).assert_user_error("features.parquet", &["has 100 ids", "only 100 are shared"]);
    // An unknown reference column.
    let mut a = base(&good);
    a.extend(["--reference".into(), format!("{}:nope", s(&fpath))]);
    go(a).assert_user_error("features.parquet", &["no column \"nope\"", "head"]);
    // A malformed reference spec.
    let mut a = base(&good);
    a.extend(["--reference".into(), "nonsense".into()]);
    go(a).assert_user_error("nonsense", &["expected `pixels` or `FILE:COLUMN`"]);
    // A missing embedding.
    go(base(&dir.join("missing.parquet"))).assert_user_error("missing.parquet", &[]);

    assert_eq!(
        std::fs::read(out.join("metrics.json")).unwrap(),
        before,
        "a failed run changed metrics.json"
    );
}
