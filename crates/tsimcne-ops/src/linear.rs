//! Fully connected layers (PyTorch's `nn.Linear`: weight `[out, in]`,
//! bias `[out]`) on row-major slices, forward and backward: the projection
//! head of the CPU's fast path. Work is split in blocks fixed by the shape,
//! so every bit of a result is independent of the thread count.

use rayon::prelude::*;

use crate::gemm::{MatMut, MatRef, matmul};

/// Rows of the output per parallel task.
const BLOCK: usize = 64;

/// The shape of a fully connected layer applied to `n` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearGeom {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
}

impl LinearGeom {
    fn check(&self, x: usize, w: usize) {
        assert_eq!(x, self.n * self.inp, "input length");
        assert_eq!(w, self.out * self.inp, "weight length");
    }
}

/// `y[n, out] = x[n, in] · wᵀ + b`.
pub fn linear_forward(x: &[f32], g: LinearGeom, w: &[f32], b: &[f32], y: &mut [f32]) {
    g.check(x.len(), w.len());
    assert_eq!(b.len(), g.out, "bias length");
    assert_eq!(y.len(), g.n * g.out, "output length");
    if g.out == 0 {
        return;
    }
    let wt = MatRef::row_major(w, g.out, g.inp).t(); // [in, out]
    y.par_chunks_mut(BLOCK * g.out)
        .enumerate()
        .for_each(|(blk, y)| {
            let (r0, rows) = (blk * BLOCK, y.len() / g.out);
            for row in y.chunks_exact_mut(g.out) {
                row.copy_from_slice(b);
            }
            let lhs = MatRef::row_major(&x[r0 * g.inp..(r0 + rows) * g.inp], rows, g.inp);
            matmul(MatMut::row_major(y, rows, g.out), true, lhs, wt);
        });
}

/// The input gradient `dx[n, in] = dy[n, out] · w`.
pub fn linear_backward_data(dy: &[f32], g: LinearGeom, w: &[f32], dx: &mut [f32]) {
    g.check(dx.len(), w.len());
    assert_eq!(dy.len(), g.n * g.out, "output gradient length");
    if g.inp == 0 {
        return;
    }
    let rhs = MatRef::row_major(w, g.out, g.inp);
    dx.par_chunks_mut(BLOCK * g.inp)
        .enumerate()
        .for_each(|(blk, dx)| {
            let (r0, rows) = (blk * BLOCK, dx.len() / g.inp);
            let lhs = MatRef::row_major(&dy[r0 * g.out..(r0 + rows) * g.out], rows, g.out);
            matmul(MatMut::row_major(dx, rows, g.inp), false, lhs, rhs);
        });
}

/// The parameter gradients `(dw[out, in], db[out]) = (dyᵀ · x, Σ_rows dy)`.
pub fn linear_backward_params(x: &[f32], dy: &[f32], g: LinearGeom) -> (Vec<f32>, Vec<f32>) {
    g.check(x.len(), g.out * g.inp);
    assert_eq!(dy.len(), g.n * g.out, "output gradient length");
    let mut dw = vec![0f32; g.out * g.inp];
    if g.inp > 0 {
        let rhs = MatRef::row_major(x, g.n, g.inp);
        dw.par_chunks_mut(BLOCK * g.inp)
            .enumerate()
            .for_each(|(blk, dw)| {
                let (o0, rows) = (blk * BLOCK, dw.len() / g.inp);
                // Columns o0.. of dy, as rows: [rows, n].
                let lhs = MatRef::strided(&dy[o0..], rows, g.n, 1, g.out);
                matmul(MatMut::row_major(dw, rows, g.inp), false, lhs, rhs);
            });
    }
    let mut db = vec![0f32; g.out];
    for row in dy.chunks_exact(g.out.max(1)) {
        crate::simd::add_assign(&mut db, row);
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], g: LinearGeom, w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; g.n * g.out];
        for i in 0..g.n {
            for o in 0..g.out {
                let mut s = f64::from(b[o]);
                for k in 0..g.inp {
                    s += f64::from(x[i * g.inp + k]) * f64::from(w[o * g.inp + k]);
                }
                y[i * g.out + o] = s as f32;
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_and_backward_match_a_naive_loop() {
        // More rows than a block, and an output of 2 as in the 2-D head.
        for g in [
            LinearGeom {
                n: 150,
                inp: 20,
                out: 70,
            },
            LinearGeom {
                n: 130,
                inp: 70,
                out: 2,
            },
        ] {
            let (x, w, b) = (
                values(g.n * g.inp, 1),
                values(g.out * g.inp, 2),
                values(g.out, 3),
            );
            let mut y = vec![0f32; g.n * g.out];
            linear_forward(&x, g, &w, &b, &mut y);
            for (a, e) in y.iter().zip(naive(&x, g, &w, &b)) {
                assert!((a - e).abs() < 1e-4, "{a} vs {e}");
            }
            // The gradients of L = Σ dy ⊙ y, against the same loops: dx is
            // the forward with wᵀ, dw the forward with dyᵀ and x.
            let dy = values(g.n * g.out, 4);
            let mut dx = vec![0f32; g.n * g.inp];
            linear_backward_data(&dy, g, &w, &mut dx);
            let (dw, db) = linear_backward_params(&x, &dy, g);
            for i in 0..g.n {
                for k in 0..g.inp {
                    let e: f64 = (0..g.out)
                        .map(|o| f64::from(dy[i * g.out + o]) * f64::from(w[o * g.inp + k]))
                        .sum();
                    assert!((f64::from(dx[i * g.inp + k]) - e).abs() < 1e-4);
                }
            }
            for o in 0..g.out {
                for k in 0..g.inp {
                    let e: f64 = (0..g.n)
                        .map(|i| f64::from(dy[i * g.out + o]) * f64::from(x[i * g.inp + k]))
                        .sum();
                    assert!((f64::from(dw[o * g.inp + k]) - e).abs() < 1e-3);
                }
                let e: f64 = (0..g.n).map(|i| f64::from(dy[i * g.out + o])).sum();
                assert!((f64::from(db[o]) - e).abs() < 1e-3);
            }
        }
    }
}
