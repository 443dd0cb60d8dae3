//! Exact k-nearest neighbours for any dimensionality, and the kNN
//! classifier and recall built on them.

use crate::brute::{self, Data};
use crate::kdtree::{KdTree, point};
use crate::topk::TopK;

/// The exact `k` nearest rows among `base` for every row in `queries`,
/// leaving out the query itself: `queries.len() · k` row indices, each
/// query's in (distance, index) order.
///
/// 1- to 3-dimensional f32 data goes through a k-d tree, anything else
/// through the pruned brute force of [`brute`]. Both use `threads` threads
/// and give the same answer for any thread count.
///
/// # Panics
/// If `k` is zero or larger than the base (less the query).
pub fn k_nearest(
    data: Data<'_>,
    base: &[u32],
    queries: &[u32],
    k: usize,
    threads: usize,
) -> Vec<u32> {
    assert!(k >= 1 && k < base.len(), "k must be in 1..base size");
    match data {
        Data::F32 { dim, values } if dim <= 3 => {
            let tree = KdTree::build(values, dim, base);
            let threads = threads.max(1);
            let mut out = vec![0u32; queries.len() * k];
            let per = queries.len().div_ceil(threads).max(1);
            std::thread::scope(|s| {
                for (qs, out) in queries.chunks(per).zip(out.chunks_mut(per * k)) {
                    let tree = &tree;
                    s.spawn(move || {
                        let mut top = TopK::new(k);
                        for (&q, o) in qs.iter().zip(out.chunks_mut(k)) {
                            top.clear();
                            tree.query(&point(values, dim, q as usize), Some(q), &mut top);
                            for (o, &(_, j)) in o.iter_mut().zip(top.items()) {
                                *o = j;
                            }
                        }
                    });
                }
            });
            out
        }
        _ => brute::k_nearest(data, base, queries, k, threads),
    }
}

/// Majority vote of the neighbours' labels; a tie goes to the smallest
/// label, as in scikit-learn's `KNeighborsClassifier` (its classes are
/// sorted and it takes the first maximum).
pub fn vote(neighbors: &[u32], k: usize, labels: &[i32]) -> Vec<i32> {
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut counts = vec![0u32; classes];
    neighbors
        .chunks(k)
        .map(|nb| {
            counts.iter_mut().for_each(|c| *c = 0);
            for &j in nb {
                counts[labels[j as usize] as usize] += 1;
            }
            let mut best = 0;
            for (c, &n) in counts.iter().enumerate() {
                if n > counts[best] {
                    best = c;
                }
            }
            best as i32
        })
        .collect()
}

/// kNN accuracy: fit on rows `train`, score rows `test` (`labels` ≥ 0).
pub fn knn_accuracy(
    data: Data<'_>,
    labels: &[i32],
    train: &[u32],
    test: &[u32],
    k: usize,
    threads: usize,
) -> f64 {
    let nb = k_nearest(data, train, test, k, threads);
    let pred = vote(&nb, k, labels);
    let hits = pred
        .iter()
        .zip(test)
        .filter(|&(&p, &t)| p == labels[t as usize])
        .count();
    hits as f64 / test.len() as f64
}

/// The mean fraction of each query's `k` neighbours in `a` that are also
/// among its `k` neighbours in `b` (both `queries.len() · k` indices).
pub fn recall(a: &[u32], b: &[u32], k: usize) -> f64 {
    let n = a.len() / k;
    let mut shared = 0usize;
    let mut sorted = vec![0u32; k];
    for (x, y) in a.chunks(k).zip(b.chunks(k)) {
        sorted.copy_from_slice(y);
        sorted.sort_unstable();
        shared += x.iter().filter(|j| sorted.binary_search(j).is_ok()).count();
    }
    shared as f64 / (n * k) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsimcne_rng::SplitMix64;

    /// The obvious O(n²) answer, with (distance, index) order.
    fn naive(data: Data<'_>, base: &[u32], queries: &[u32], k: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for &q in queries {
            let mut all: Vec<(f64, u32)> = base
                .iter()
                .filter(|&&j| j != q)
                .map(|&j| (data.exact(q as usize, j as usize), j))
                .collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            out.extend(all[..k].iter().map(|p| p.1));
        }
        out
    }

    /// Random clustered data with exact duplicates, so that distance ties
    /// occur and the (distance, index) order matters.
    fn clustered_u8(n: usize, dim: usize, seed: u64) -> Vec<u8> {
        let mut rng = SplitMix64::keyed(&[seed]);
        let centres: Vec<u8> = (0..8 * dim).map(|_| rng.below(256) as u8).collect();
        let mut v = Vec::with_capacity(n * dim);
        for i in 0..n {
            if i % 10 == 9 {
                let j = rng.below(i);
                let row: Vec<u8> = v[j * dim..(j + 1) * dim].to_vec();
                v.extend(row);
                continue;
            }
            let c = rng.below(8);
            for t in 0..dim {
                let x = i32::from(centres[c * dim + t]) + rng.below(41) as i32 - 20;
                v.push(x.clamp(0, 255) as u8);
            }
        }
        v
    }

    #[test]
    fn brute_force_is_exact_on_u8_and_f32_for_any_thread_count() {
        for (n, dim) in [(700, 100), (300, 40), (500, 20)] {
            let v = clustered_u8(n, dim, dim as u64);
            let f: Vec<f32> = v.iter().map(|&x| f32::from(x) * 0.37 - 11.0).collect();
            let base: Vec<u32> = (0..n as u32).filter(|i| i % 7 != 3).collect();
            let queries: Vec<u32> = (0..n as u32).filter(|i| i % 3 == 0).collect();
            for data in [Data::U8 { dim, values: &v }, Data::F32 { dim, values: &f }] {
                let want = naive(data, &base, &queries, 15);
                for threads in [1, 3] {
                    assert_eq!(
                        k_nearest(data, &base, &queries, 15, threads),
                        want,
                        "n {n} dim {dim}"
                    );
                }
            }
        }
    }

    #[test]
    fn kd_tree_is_exact_in_1_2_and_3_dimensions() {
        let mut rng = SplitMix64::keyed(&[5]);
        for dim in 1..=3 {
            let n = 2000;
            // A coarse grid, so many distances tie exactly.
            let v: Vec<f32> = (0..n * dim).map(|_| rng.below(30) as f32 * 0.25).collect();
            let all: Vec<u32> = (0..n as u32).collect();
            let queries: Vec<u32> = (0..n as u32).step_by(7).collect();
            let data = Data::F32 { dim, values: &v };
            let want = naive(data, &all, &queries, 15);
            for threads in [1, 2] {
                assert_eq!(
                    k_nearest(data, &all, &queries, 15, threads),
                    want,
                    "dim {dim}"
                );
            }
        }
    }

    #[test]
    fn vote_breaks_ties_towards_the_smallest_label() {
        let labels = [3, 1, 1, 3, 2, 0];
        // neighbours 0,1,2,3: labels 3,1,1,3 → tie 1 vs 3 → 1.
        assert_eq!(vote(&[0, 1, 2, 3, 4, 5, 5, 4], 4, &labels), vec![1, 0]);
    }

    #[test]
    fn recall_counts_shared_neighbours() {
        assert_eq!(recall(&[1, 2, 3, 4], &[2, 1, 5, 6], 2), 0.5);
    }
}
