//! The contrastive loss on host rows, its value and gradient in one pass:
//! InfoNCE with the Cauchy similarity `s(u, v) = −log(1 + ‖u − v‖²)`
//! (t-SimCNE), and the fixed map scale of `--map-scale`. These are the
//! functions of tsimcne-train's candle graphs (`info_nce` with
//! `Similarity::Cauchy`, `fixed_scale`), whose tests hold the two together
//! and check these gradients by finite differences.
//!
//! Work is split in blocks fixed by the shape, and every sum runs in a fixed
//! order, so each bit of a result is independent of the thread count.

use rayon::prelude::*;

use crate::gemm::{MatMut, MatRef, matmul};

/// Rows per parallel task.
const BLOCK: usize = 32;

/// InfoNCE with the Cauchy similarity of the views `z` `[rows, dim]`
/// (row-major; the first `rows/2` views, then their partners, so view `i`'s
/// partner is `i ± rows/2`): the mean over all views of
/// `log Σ_{j≠i} exp s(i, j) − s(i, partner(i))`. Returns the loss and its
/// gradient by `z`.
///
/// Squared distances are formed as in the candle graph, `‖u‖² + ‖v‖² −
/// 2u·v` clamped at 0 (a clamped pair gets no gradient through its distance).
pub fn info_nce_cauchy(z: &[f32], rows: usize, dim: usize) -> (f32, Vec<f32>) {
    assert!(
        rows >= 4 && rows.is_multiple_of(2),
        "info_nce needs an even number of at least 4 views, got {rows}"
    );
    assert_eq!(z.len(), rows * dim, "input length");
    let half = rows / 2;
    let sq: Vec<f32> = z
        .chunks_exact(dim.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    // [rows, rows]: u·v of every pair, then A[i][j] = ∂L/∂d²(i, j) through
    // row i's term, in place.
    let mut a = vec![0f32; rows * rows];
    let zt = MatRef::row_major(z, rows, dim).t();
    let row_loss: Vec<f64> = a
        .par_chunks_mut(BLOCK * rows)
        .enumerate()
        .flat_map_iter(|(blk, a)| {
            let (r0, n) = (blk * BLOCK, a.len() / rows);
            let lhs = MatRef::row_major(&z[r0 * dim..(r0 + n) * dim], n, dim);
            matmul(MatMut::row_major(a, n, rows), false, lhs, zt);
            let sq = &sq;
            a.chunks_exact_mut(rows).enumerate().map(move |(k, row)| {
                let i = r0 + k;
                let partner = (i + half) % rows;
                // d²(i, j) into the row (before the clamp), and the kernel
                // q = 1/(1 + d²) = exp s summed over the candidates: with
                // the Cauchy kernel, s ≤ 0 and log Σ exp s = log Σ q needs
                // no max shift.
                let mut total = 0f64;
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (sq[i] + sq[j]) - *v * 2.0;
                    if j != i {
                        total += f64::from(1.0 / (v.max(0.0) + 1.0));
                    }
                }
                let d2_pos = row[partner].max(0.0);
                // ∂L/∂s(i, j) = (q/Σq − [j = partner]) / rows, and
                // ∂s/∂d² = −q.
                let scale = 1.0 / rows as f64;
                for (j, v) in row.iter_mut().enumerate() {
                    if j == i || *v <= 0.0 {
                        *v = 0.0;
                        continue;
                    }
                    let q = f64::from(1.0 / (*v + 1.0));
                    let g = (q / total - if j == partner { 1.0 } else { 0.0 }) * scale;
                    *v = (-g * q) as f32;
                }
                total.ln() + f64::from(d2_pos + 1.0).ln()
            })
        })
        .collect();
    let loss = row_loss.iter().sum::<f64>() / rows as f64;
    // d² (i, j) = ‖zᵢ‖² + ‖zⱼ‖² − 2 zᵢ·zⱼ enters through both (i, j) and
    // (j, i): with W = A + Aᵀ, dzᵢ = 2 Σⱼ Wᵢⱼ (zᵢ − zⱼ) = 2 (rowsum(W)ᵢ zᵢ − (W z)ᵢ).
    let mut w = vec![0f32; rows * rows];
    w.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(blk, w)| {
            for (k, row) in w.chunks_exact_mut(rows).enumerate() {
                let i = blk * BLOCK + k;
                for (j, v) in row.iter_mut().enumerate() {
                    *v = a[i * rows + j] + a[j * rows + i];
                }
            }
        });
    let mut grad = vec![0f32; rows * dim];
    let zm = MatRef::row_major(z, rows, dim);
    grad.par_chunks_mut(BLOCK * dim.max(1))
        .enumerate()
        .for_each(|(blk, g)| {
            let (r0, n) = (blk * BLOCK, g.len() / dim.max(1));
            let lhs = MatRef::row_major(&w[r0 * rows..(r0 + n) * rows], n, rows);
            matmul(MatMut::row_major(g, n, dim), false, lhs, zm);
            for (k, g) in g.chunks_exact_mut(dim.max(1)).enumerate() {
                let i = r0 + k;
                let sum: f32 = w[i * rows..(i + 1) * rows].iter().sum();
                for (d, gv) in g.iter_mut().enumerate() {
                    *gv = 2.0 * (sum * z[i * dim + d] - *gv);
                }
            }
        });
    (loss as f32, grad)
}

/// What [`fixed_scale_backward`] needs from the forward pass.
#[derive(Debug, Clone)]
pub struct FixedScale {
    centred: Vec<f64>,
    rms: f64,
    scale: f64,
}

/// `--map-scale`: the rows `z` `[rows, dim]` centred on their mean and
/// scaled so that their root mean square coordinate is `scale`
/// (`rms = sqrt(mean(centred²) + 1e-12)`).
pub fn fixed_scale_forward(
    z: &[f32],
    rows: usize,
    dim: usize,
    scale: f64,
) -> (Vec<f32>, FixedScale) {
    assert_eq!(z.len(), rows * dim, "input length");
    let mean = crate::column_means(z, dim);
    let centred: Vec<f64> = z
        .iter()
        .enumerate()
        .map(|(k, &v)| f64::from(v) - mean[k % dim])
        .collect();
    let ms = centred.iter().map(|c| c * c).sum::<f64>() / (rows * dim) as f64;
    let rms = (ms + 1e-12).sqrt();
    let out = centred.iter().map(|c| (c / rms * scale) as f32).collect();
    (
        out,
        FixedScale {
            centred,
            rms,
            scale,
        },
    )
}

/// The gradient by `z` of a loss whose gradient by the scaled rows is `dout`.
pub fn fixed_scale_backward(fs: &FixedScale, dout: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    assert_eq!(dout.len(), fs.centred.len(), "gradient length");
    let count = (rows * dim) as f64;
    let (s, r) = (fs.scale, fs.rms);
    let gc: f64 = dout
        .iter()
        .zip(&fs.centred)
        .map(|(&g, c)| f64::from(g) * c)
        .sum();
    // out = s·c/r, ∂r/∂c = c/(count·r).
    let dc: Vec<f64> = dout
        .iter()
        .zip(&fs.centred)
        .map(|(&g, c)| s * f64::from(g) / r - s * gc / (r * r) * c / (count * r))
        .collect();
    let mean = crate::column_means(&dc, dim);
    dc.iter()
        .enumerate()
        .map(|(k, v)| (v - mean[k % dim]) as f32)
        .collect()
}
