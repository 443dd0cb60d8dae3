//! Positive partners other than the image itself (opt-in, not the recipe):
//! the neighbour lists a second view is drawn from, in pixel space, in the
//! backbone features of the model being trained, or both, and the seeded
//! draw of a partner per epoch.

use tsimcne_augment::AugmentConfig;
use tsimcne_model::Model;
use tsimcne_rng::SplitMix64;

use crate::error::Result;
use crate::trainer::{Images, embed_all};

/// Key of the partner streams of [`Neighbours`].
const PARTNER_KEY: u64 = 0x5041_5254_4e45_5200; // "PARTNER"

/// Positive partners other than the image itself (opt-in, not the recipe):
/// in epoch `e` the second view of image `i` is made from one of its `k`
/// listed neighbours, drawn uniformly from the stream keyed by
/// (seed, "PARTNER", e, i), so the choice does not depend on the batch or
/// the thread count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbours {
    pub k: usize,
    /// `k` image indices per image, row after row.
    pub idx: std::sync::Arc<Vec<u32>>,
}

impl Neighbours {
    /// The exact `k` nearest images of every image in pixel space
    /// (Euclidean on the u8 pixels, the image itself left out; ties by
    /// index), on `threads` threads (the result does not depend on them).
    ///
    /// # Panics
    /// If `k` is 0 or not below the number of images.
    pub fn in_pixels(images: &Images, k: usize, threads: usize) -> Self {
        let all: Vec<u32> = (0..images.len as u32).collect();
        let data = tsimcne_eval::Data::U8 {
            dim: images.shape.len(),
            values: &images.pixels,
        };
        let idx = tsimcne_eval::knn::k_nearest(data, &all, &all, k, threads);
        Self {
            k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// The exact `k` nearest rows of `values` (`dim` floats a row,
    /// Euclidean, the row itself left out; ties by index).
    pub fn in_features(values: &[f32], dim: usize, k: usize, threads: usize) -> Self {
        let n = values.len() / dim;
        let all: Vec<u32> = (0..n as u32).collect();
        let data = tsimcne_eval::Data::F32 { dim, values };
        let idx = tsimcne_eval::knn::k_nearest(data, &all, &all, k, threads);
        Self {
            k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// Both lists of every image, `a`'s then `b`'s (a neighbour in both is
    /// listed twice, so drawn twice as often).
    pub fn union(a: &Neighbours, b: &Neighbours) -> Self {
        let n = a.idx.len() / a.k;
        assert_eq!(n, b.idx.len() / b.k, "neighbour lists of different sizes");
        let mut idx = Vec::with_capacity(n * (a.k + b.k));
        for i in 0..n {
            idx.extend_from_slice(&a.idx[i * a.k..(i + 1) * a.k]);
            idx.extend_from_slice(&b.idx[i * b.k..(i + 1) * b.k]);
        }
        Self {
            k: a.k + b.k,
            idx: std::sync::Arc::new(idx),
        }
    }

    /// The partner of image `i` in `epoch`.
    pub fn partner(&self, i: usize, seed: u64, epoch: usize) -> usize {
        let mut rng = SplitMix64::keyed(&[seed, PARTNER_KEY, epoch as u64, i as u64]);
        self.idx[i * self.k + rng.below(self.k)] as usize
    }
}

/// Where each image's second view comes from (opt-in, not the recipe):
/// one of its listed neighbours, drawn per epoch by [`Neighbours::partner`]
/// from the union of the fixed list and the feature-space list in use.
/// With neither, the second view is of the image itself (the recipe).
#[derive(Clone, Debug, Default)]
pub struct Positives {
    /// A fixed list, e.g. the pixel-space neighbours.
    pub fixed: Option<Neighbours>,
    /// Neighbours in the backbone features of the model being trained.
    pub features: Option<FeatureNeighbours>,
}

/// The `k` nearest images in the backbone features (eval mode, no
/// augmentation) of the model being trained, recomputed as it learns.
#[derive(Clone, Debug)]
pub struct FeatureNeighbours {
    pub k: usize,
    /// Recompute at the start of every `refresh`-th epoch; 0: never again.
    pub refresh: usize,
    /// Compute them before the first epoch (the model is trained already,
    /// as in the 2-D stages); otherwise the first list is made at epoch
    /// `refresh`, and until then only the fixed list (or the image itself)
    /// gives partners.
    pub at_start: bool,
    /// Neighbours in the joint space (`--knn-space joint`): by the mean of
    /// the pixel and the feature cosine similarities, see [`joint_rows`].
    pub joint: bool,
    /// The input preparation of the embedding pass (normalisation only).
    pub plain: AugmentConfig,
}

impl FeatureNeighbours {
    /// Whether epoch `epoch` (0-based) starts by recomputing the list.
    pub(crate) fn due(&self, epoch: usize) -> bool {
        (self.at_start && epoch == 0)
            || (self.refresh > 0 && epoch > 0 && epoch.is_multiple_of(self.refresh))
    }

    /// Whether a list is in use in epoch `epoch`.
    pub(crate) fn active(&self, epoch: usize) -> bool {
        self.at_start || (self.refresh > 0 && epoch >= self.refresh)
    }

    /// The list of `model`'s current features.
    pub fn compute(&self, model: &Model, images: &Images, threads: usize) -> Result<Neighbours> {
        let (f, _) = embed_all(model, images, &self.plain, 256)?;
        let dim = f.len() / images.len.max(1);
        if self.joint {
            let (rows, dim) = joint_rows(&images.pixels, images.shape.len(), &f, dim);
            return Ok(Neighbours::in_features(&rows, dim, self.k, threads));
        }
        Ok(Neighbours::in_features(&f, dim, self.k, threads))
    }
}

/// Rows whose Euclidean neighbours are the neighbours by the mean of the
/// two cosine similarities: each row is `[p̂, f̂]`, where `p̂` is the image's
/// pixels minus the table's mean pixels, scaled to unit length, and `f̂` the
/// same for its features. Since `‖[p̂, f̂] − [p̂', f̂']‖² = 4 − 2(cos_p + cos_f)`,
/// both spaces count equally whatever their scales. A row that equals the
/// mean stays zero. Returns the rows and their length.
///
/// Means are summed in f64 in row order, so the result does not depend on
/// threads.
pub fn joint_rows(pixels: &[u8], pdim: usize, features: &[f32], fdim: usize) -> (Vec<f32>, usize) {
    let n = features.len() / fdim.max(1);
    assert_eq!(
        pixels.len(),
        n * pdim,
        "pixel and feature rows differ in number"
    );
    let dim = pdim + fdim;
    let mut out = vec![0f32; n * dim];
    put_centred_unit(pixels, pdim, &mut out, dim, 0);
    put_centred_unit(features, fdim, &mut out, dim, pdim);
    (out, dim)
}

/// Writes each `d`-long row of `values`, minus the column means and scaled
/// to unit length (zero when it equals the mean), into columns
/// `offset..offset + d` of the `dim`-long rows of `out`.
fn put_centred_unit<T: Copy + Into<f64>>(
    values: &[T],
    d: usize,
    out: &mut [f32],
    dim: usize,
    offset: usize,
) {
    let mean = tsimcne_ops::column_means(values, d);
    let mut centred = vec![0f64; d];
    for (row, o) in values.chunks_exact(d).zip(out.chunks_exact_mut(dim)) {
        for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = v.into() - m;
        }
        let norm = centred.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for (o, c) in o[offset..offset + d].iter_mut().zip(&centred) {
            *o = (c * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsimcne_augment::Shape;

    /// Images on a line (image `i` is `i·10` everywhere): the pixel
    /// neighbours are the adjacent images, and the partners are drawn from
    /// them only, the same for the same (seed, epoch, image), each one in turn.
    #[test]
    fn pixel_neighbours_and_partners() {
        let shape = Shape {
            height: 2,
            width: 2,
            channels: 1,
        };
        let n = 12;
        let images = Images {
            shape,
            pixels: (0..n).flat_map(|i| [(i * 10) as u8; 4]).collect(),
            len: n,
        };
        let nb = Neighbours::in_pixels(&images, 2, 2);
        assert_eq!(nb, Neighbours::in_pixels(&images, 2, 1));
        assert_eq!(&nb.idx[..2], &[1, 2]);
        assert_eq!(&nb.idx[5 * 2..6 * 2], &[4, 6]);
        assert_eq!(&nb.idx[(n - 1) * 2..], &[10, 9]);
        let mut seen = [false; 2];
        for epoch in 0..20 {
            let p = nb.partner(5, 3, epoch);
            assert_eq!(p, nb.partner(5, 3, epoch));
            assert!(p == 4 || p == 6, "{p}");
            seen[usize::from(p == 6)] = true;
        }
        assert_eq!(seen, [true, true]);
    }
    /// Rows on a line: the feature neighbours are the adjacent rows, the same
    /// on any thread count.
    #[test]
    fn feature_neighbours_are_the_nearest_rows() {
        let values: Vec<f32> = (0..8).flat_map(|i| [i as f32, 2.0 * i as f32]).collect();
        let nb = Neighbours::in_features(&values, 2, 2, 2);
        assert_eq!(nb, Neighbours::in_features(&values, 2, 2, 1));
        assert_eq!(&nb.idx[..2], &[1, 2]);
        assert_eq!(&nb.idx[3 * 2..4 * 2], &[2, 4]);
        assert_eq!(&nb.idx[7 * 2..], &[6, 5]);
    }

    /// The union lists `a`'s then `b`'s neighbours per image.
    #[test]
    fn union_lists_both() {
        let a = Neighbours {
            k: 1,
            idx: std::sync::Arc::new(vec![1, 0, 0]),
        };
        let b = Neighbours {
            k: 2,
            idx: std::sync::Arc::new(vec![2, 1, 2, 0, 1, 0]),
        };
        let u = Neighbours::union(&a, &b);
        assert_eq!(u.k, 3);
        assert_eq!(*u.idx, vec![1, 2, 1, 0, 2, 0, 0, 1, 0]);
    }

    /// `--knn-space joint`: the Euclidean neighbours of the joint rows are
    /// the neighbours by the mean of the two centred cosine similarities,
    /// computed here directly in f64; a row equal to the mean stays zero.
    #[test]
    fn joint_rows_rank_by_mean_cosine() {
        let (n, pdim, fdim) = (40, 6, 3);
        let mut rng = SplitMix64::keyed(&[7]);
        let pixels: Vec<u8> = (0..n * pdim).map(|_| rng.below(256) as u8).collect();
        // Features on another scale, so an unscaled concatenation would
        // rank by them alone.
        let features: Vec<f32> = (0..n * fdim)
            .map(|_| rng.below(1000) as f32 * 50.0)
            .collect();
        let (rows, dim) = joint_rows(&pixels, pdim, &features, fdim);
        assert_eq!((rows.len(), dim), (n * (pdim + fdim), pdim + fdim));
        let centred = |v: Vec<f64>, d: usize| -> Vec<Vec<f64>> {
            let mean: Vec<f64> = (0..d)
                .map(|j| (0..n).map(|i| v[i * d + j]).sum::<f64>() / n as f64)
                .collect();
            (0..n)
                .map(|i| (0..d).map(|j| v[i * d + j] - mean[j]).collect())
                .collect()
        };
        let p = centred(pixels.iter().map(|&v| f64::from(v)).collect(), pdim);
        let f = centred(features.iter().map(|&v| f64::from(v)).collect(), fdim);
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let k = 5;
        let nb = Neighbours::in_features(&rows, dim, k, 2);
        for i in 0..n {
            let mut by_sim: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (-(cos(&p[i], &p[j]) + cos(&f[i], &f[j])) / 2.0, j))
                .collect();
            by_sim.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let want: Vec<u32> = by_sim[..k].iter().map(|&(_, j)| j as u32).collect();
            assert_eq!(&nb.idx[i * k..(i + 1) * k], &want[..], "image {i}");
        }
        // Three equal images all equal the mean: their rows are zero.
        let (rows, _) = joint_rows(&[5; 6], 2, &[1.0; 3], 1);
        assert!(rows.iter().all(|&v| v == 0.0));
    }

    /// When the feature list is (re)computed and when it is in use.
    #[test]
    fn feature_list_schedule() {
        let f = |refresh, at_start| FeatureNeighbours {
            joint: false,
            k: 5,
            refresh,
            at_start,
            plain: AugmentConfig::default(),
        };
        let every3 = f(3, false);
        let due: Vec<usize> = (0..10).filter(|&e| every3.due(e)).collect();
        assert_eq!(due, [3, 6, 9]);
        assert!(!every3.active(2) && every3.active(3) && every3.active(9));
        let once = f(0, true);
        let due: Vec<usize> = (0..10).filter(|&e| once.due(e)).collect();
        assert_eq!(due, [0]);
        assert!((0..10).all(|e| once.active(e)));
        let both = f(4, true);
        let due: Vec<usize> = (0..10).filter(|&e| both.due(e)).collect();
        assert_eq!(due, [0, 4, 8]);
        assert!(!f(0, false).active(5) && !f(0, false).due(0));
    }
}
