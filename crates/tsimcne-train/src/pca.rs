//! The PCA start of `project`'s output layer (`--init pca`): the previous
//! stage's outputs projected on their top principal axes, by subspace
//! iteration on their covariance.

use std::path::Path;

use tsimcne_format::model_config::Normalize;
use tsimcne_model::Model;

use crate::error::Result;
use crate::stage::{FEATURES_FILE, augment_config};
use crate::trainer::{Images, embed_all};

/// The output layer whose outputs are the previous outputs `z` projected on
/// their top `out_dim` principal components: weight `Pᵀ W`, bias
/// `Pᵀ (b − mean z)`. `z` comes from `from/features.parquet` when it covers
/// exactly these images, else from a forward pass.
pub(crate) fn pca_output_layer(
    prev: &Model,
    from: &Path,
    set: &tsimcne_format::ImageSet,
    normalize: &Option<Normalize>,
    out_dim: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let d = prev.arch.out_dim;
    let n = set.len();
    let z: Vec<f32> =
        match tsimcne_format::vectors::read_vectors(&from.join(FEATURES_FILE), Some("head")) {
            Ok(v)
                if v.dim == d
                    && v.len() == n
                    && v.ids.iter().enumerate().all(|(i, &id)| id as usize == i) =>
            {
                v.values
            }
            _ => {
                let images = Images::from_set(set.clone());
                embed_all(prev, &images, &augment_config(normalize), 256)?.1
            }
        };
    let mean = tsimcne_ops::column_means(&z, d);
    let mut cov = vec![0f64; d * d];
    for row in z.chunks(d) {
        for i in 0..d {
            let a = f64::from(row[i]) - mean[i];
            for j in i..d {
                cov[i * d + j] += a * (f64::from(row[j]) - mean[j]);
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[i * d + j] = cov[j * d + i];
        }
    }
    // Subspace iteration for the top `out_dim` eigenvectors (rows of p).
    let mut p: Vec<f64> = (0..out_dim * d)
        .map(|i| {
            if i % (d + 1) == 0 {
                1.0
            } else {
                1e-3 * ((i * 7919) % 13) as f64
            }
        })
        .collect();
    for _ in 0..300 {
        let mut next = vec![0f64; out_dim * d];
        for c in 0..out_dim {
            for i in 0..d {
                next[c * d + i] = (0..d).map(|j| cov[i * d + j] * p[c * d + j]).sum();
            }
        }
        // Gram–Schmidt.
        for c in 0..out_dim {
            for e in 0..c {
                let dot: f64 = (0..d).map(|i| next[c * d + i] * next[e * d + i]).sum();
                for i in 0..d {
                    next[c * d + i] -= dot * next[e * d + i];
                }
            }
            let norm = (0..d)
                .map(|i| next[c * d + i].powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-300);
            (0..d).for_each(|i| next[c * d + i] /= norm);
        }
        p = next;
    }
    // A fixed sign: the largest component of each direction is positive.
    for c in 0..out_dim {
        let row = &mut p[c * d..(c + 1) * d];
        let big = row
            .iter()
            .copied()
            .fold(0f64, |a, v| if v.abs() > a.abs() { v } else { a });
        if big < 0.0 {
            row.iter_mut().for_each(|v| *v = -*v);
        }
    }
    let vars = prev.vars();
    let key = |t: &str| {
        format!(
            "{}.{}.{t}",
            tsimcne_format::model_keys::HEAD,
            tsimcne_format::model_keys::HEAD_OUT
        )
    };
    let w: Vec<f32> = vars[&key("weight")].as_tensor().flatten_all()?.to_vec1()?; // [d, hidden]
    let b: Vec<f32> = vars[&key("bias")].as_tensor().to_vec1()?; // [d]
    let hidden = w.len() / d;
    let mut weight = vec![0f32; out_dim * hidden];
    let mut bias = vec![0f32; out_dim];
    for c in 0..out_dim {
        for t in 0..hidden {
            weight[c * hidden + t] = (0..d)
                .map(|i| p[c * d + i] * f64::from(w[i * hidden + t]))
                .sum::<f64>() as f32;
        }
        bias[c] = (0..d)
            .map(|i| p[c * d + i] * (f64::from(b[i]) - mean[i]))
            .sum::<f64>() as f32;
    }
    Ok((weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use tsimcne_format::{ImageMeta, ImageSet};
    use tsimcne_model::preset;

    fn covariance(z: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = z.len() / d;
        let mut mean = vec![0f64; d];
        for row in z.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v) / n as f64;
            }
        }
        let mut cov = vec![0f64; d * d];
        for row in z.chunks(d) {
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] +=
                        (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]) / n as f64;
                }
            }
        }
        (mean, cov)
    }

    /// The PCA-initialised map is the previous output on its principal
    /// axes: centred, uncorrelated, its first axis at least as spread as
    /// the previous output along any direction.
    #[test]
    fn pca_output_layer_projects_on_the_principal_axes() {
        let arch = preset("tiny", 1, 8).unwrap();
        let prev = Model::new(&arch, 3, &Device::Cpu).unwrap();
        let n = 64;
        let mut rng = tsimcne_rng::SplitMix64::keyed(&[9]);
        let pixels = (0..n * 64).map(|_| rng.below(256) as u8).collect();
        let meta = ImageMeta::folder((8, 8, 1), vec![], "md5:0".into());
        let set = ImageSet::train_only(meta, vec![None; n], pixels);
        let dir = tempfile::tempdir().unwrap(); // no features.parquet: a forward pass
        let (w, b) = pca_output_layer(&prev, dir.path(), &set, &None, 2).unwrap();
        let map = prev.with_output(2, w, b).unwrap();
        let images = Images::from_set(set);
        let aug = augment_config(&None);
        let z8 = embed_all(&prev, &images, &aug, 16).unwrap().1;
        let z2 = embed_all(&map, &images, &aug, 16).unwrap().1;
        let (mean, cov) = covariance(&z2, 2);
        let (_, cov8) = covariance(&z8, 8);
        let scale = cov[0];
        assert!(
            mean.iter().all(|m| m.abs() < 1e-4 * scale.sqrt()),
            "{mean:?}"
        );
        assert!(cov[1].abs() < 1e-4 * scale, "{cov:?}");
        assert!(cov[0] >= cov[3], "{cov:?}");
        // No direction of the 8-D output (axes and random ones) spreads more.
        for t in 0..20 {
            let u: Vec<f64> = (0..8)
                .map(|i| {
                    if t < 8 {
                        f64::from(u8::from(i == t))
                    } else {
                        rng.normal()
                    }
                })
                .collect();
            let norm: f64 = u.iter().map(|v| v * v).sum();
            let var: f64 = (0..8)
                .flat_map(|i| (0..8).map(move |j| (i, j)))
                .map(|(i, j)| u[i] * u[j] * cov8[i * 8 + j])
                .sum::<f64>()
                / norm;
            assert!(
                var <= cov[0] * (1.0 + 1e-4),
                "direction {t}: {var} > {}",
                cov[0]
            );
        }
        // The two variances are the top two eigenvalues: their sum is the
        // largest variance captured by any plane, at least that of any pair of axes.
        for i in 0..8 {
            for j in 0..i {
                assert!(cov8[i * 9] + cov8[j * 9] <= (cov[0] + cov[3]) * (1.0 + 1e-4));
            }
        }
    }
}
