//! `evaluate`'s neighbours and kNN predictions against scikit-learn, on the
//! fixture written by `tests/golden/make_eval_golden.py`.

use safetensors::SafeTensors;
use tsimcne_eval::Data;
use tsimcne_eval::knn::{k_nearest, vote};

const K: usize = 15;

fn fixture() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/eval_golden.safetensors"
    );
    std::fs::read(path).expect("tests/golden/eval_golden.safetensors")
}

fn get<T: Copy>(
    st: &SafeTensors<'_>,
    name: &str,
    from: fn([u8; 8], usize) -> T,
    size: usize,
) -> Vec<T> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("no {name} in the fixture"));
    t.data()
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            from(b, size)
        })
        .collect()
}

fn f32s(st: &SafeTensors<'_>, n: &str) -> Vec<f32> {
    get(
        st,
        n,
        |b, _| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        4,
    )
}
fn f64s(st: &SafeTensors<'_>, n: &str) -> Vec<f64> {
    get(st, n, |b, _| f64::from_le_bytes(b), 8)
}
fn i32s(st: &SafeTensors<'_>, n: &str) -> Vec<i32> {
    get(
        st,
        n,
        |b, _| i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        4,
    )
}
fn i64s(st: &SafeTensors<'_>, n: &str) -> Vec<i64> {
    get(st, n, |b, _| i64::from_le_bytes(b), 8)
}
fn u8s(st: &SafeTensors<'_>, n: &str) -> Vec<u8> {
    st.tensor(n).unwrap().data().to_vec()
}

#[test]
fn neighbours_and_predictions_match_scikit_learn() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let labels = i32s(&st, "labels");
    let n = labels.len();
    let is_test = u8s(&st, "is_test");
    let train: Vec<u32> = (0..n as u32)
        .filter(|&i| is_test[i as usize] == 0)
        .collect();
    let test: Vec<u32> = (0..n as u32)
        .filter(|&i| is_test[i as usize] == 1)
        .collect();
    let all: Vec<u32> = (0..n as u32).collect();
    let map = f32s(&st, "map");
    let pixels = u8s(&st, "pixels");
    let features = f32s(&st, "features");
    let spaces = [
        (
            "map",
            Data::F32 {
                dim: 2,
                values: &map,
            },
        ),
        (
            "pixels",
            Data::U8 {
                dim: 64,
                values: &pixels,
            },
        ),
        (
            "features",
            Data::F32 {
                dim: 48,
                values: &features,
            },
        ),
    ];
    for (name, data) in spaces {
        for threads in [1, 2] {
            // kNN classifier: fit on train, predict test.
            let nb = k_nearest(data, &train, &test, K, threads);
            let pred = vote(&nb, K, &labels);
            let want = i32s(&st, &format!("pred_{name}"));
            let defined = u8s(&st, &format!("pred_{name}_defined"));
            for i in 0..test.len() {
                if defined[i] == 1 {
                    assert_eq!(pred[i], want[i], "{name}: prediction for test point {i}");
                }
            }

            // Neighbours of every point among all, itself left out.
            let nb = k_nearest(data, &all, &all, K, threads);
            let want = i64s(&st, &format!("nn_{name}"));
            let dist = f64s(&st, &format!("dist_{name}"));
            let defined = u8s(&st, &format!("nn_{name}_defined"));
            for i in 0..n {
                let ours = &nb[i * K..(i + 1) * K];
                let theirs = &want[i * K..(i + 1) * K];
                // The same distances in the same order (ties aside, the same
                // points); scikit-learn's f64 expansion is exact for u8 data
                // and within 1e-12 for floats.
                for (r, (&j, &d)) in ours.iter().zip(&dist[i * K..(i + 1) * K]).enumerate() {
                    let mine = data_dist(data, i, j as usize);
                    assert!(
                        (mine - d).abs() <= 1e-9 * d.max(1.0),
                        "{name}: point {i}, neighbour {r}: distance {mine} vs scikit-learn {d}"
                    );
                }
                if defined[i] == 1 {
                    let mut a: Vec<i64> = ours.iter().map(|&j| i64::from(j)).collect();
                    let mut b = theirs.to_vec();
                    a.sort_unstable();
                    b.sort_unstable();
                    assert_eq!(a, b, "{name}: neighbours of point {i}");
                }
            }
        }
    }
}

/// The squared distance computed independently of the library.
fn data_dist(data: Data<'_>, i: usize, j: usize) -> f64 {
    match data {
        Data::U8 { dim, values } => (0..dim)
            .map(|t| {
                let v = f64::from(values[i * dim + t]) - f64::from(values[j * dim + t]);
                v * v
            })
            .sum(),
        Data::F32 { dim, values } => (0..dim)
            .map(|t| {
                let v = f64::from(values[i * dim + t]) - f64::from(values[j * dim + t]);
                v * v
            })
            .sum(),
    }
}
