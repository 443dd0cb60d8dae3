//! Batch normalisation over the rows of a `[rows, channels]` (NHWC) matrix,
//! with the ReLU and the residual addition of a ResNet block fused in:
//! `y = relu(bn(x) + residual)`. Statistics are summed in f64 per block of
//! rows, blocks fixed by the shape, so results do not depend on the thread
//! count.

use rayon::prelude::*;

use crate::simd::simd_kernel;

/// Batch statistics per channel: the mean and the biased variance.
#[derive(Debug, Clone, PartialEq)]
pub struct BnStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl BnStats {
    /// `1 / sqrt(var + eps)` per channel.
    pub fn invstd(&self, eps: f64) -> Vec<f32> {
        self.var
            .iter()
            .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
            .collect()
    }
}

/// Rows per parallel block: at most 64 blocks, at least 256 rows each.
fn block_rows(rows: usize) -> usize {
    rows.div_ceil(64).max(256)
}

/// Per-channel sums of `f(row values)` pairs, in f64, reduced in block order.
fn channel_sums(
    rows: usize,
    c: usize,
    block: impl Fn(std::ops::Range<usize>, &mut [f64], &mut [f64]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let bl = block_rows(rows);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..rows.div_ceil(bl))
        .into_par_iter()
        .map(|b| {
            let (mut s1, mut s2) = (vec![0.0; c], vec![0.0; c]);
            block(b * bl..((b + 1) * bl).min(rows), &mut s1, &mut s2);
            (s1, s2)
        })
        .collect();
    let (mut s1, mut s2) = (vec![0.0; c], vec![0.0; c]);
    for (a, b) in parts {
        for j in 0..c {
            s1[j] += a[j];
            s2[j] += b[j];
        }
    }
    (s1, s2)
}

/// Mean and biased variance of each channel of `x` (`[rows, c]`).
pub fn bn_stats(x: &[f32], c: usize) -> BnStats {
    assert!(c > 0 && x.len().is_multiple_of(c));
    let rows = x.len() / c;
    let (s1, s2) = channel_sums(rows, c, |range, s1, s2| {
        Stats {
            x: &x[range.start * c..range.end * c],
            c,
            s1,
            s2,
        }
        .run()
    });
    let n = rows.max(1) as f64;
    let mean: Vec<f64> = s1.iter().map(|s| s / n).collect();
    BnStats {
        var: s2
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s / n - m * m).max(0.0) as f32)
            .collect(),
        mean: mean.into_iter().map(|m| m as f32).collect(),
    }
}

/// `out = x·scale + shift (+ residual)`, then ReLU if `relu`, per channel.
pub fn bn_apply(
    x: &[f32],
    c: usize,
    scale: &[f32],
    shift: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    assert!(scale.len() == c && shift.len() == c && out.len() == x.len());
    if let Some(r) = residual {
        assert_eq!(r.len(), x.len());
    }
    let bl = block_rows(x.len() / c) * c;
    out.par_chunks_mut(bl).enumerate().for_each(|(b, out)| {
        let range = b * bl..b * bl + out.len();
        Apply {
            x: &x[range.clone()],
            res: residual.map(|r| &r[range]),
            c,
            scale,
            shift,
            relu,
            out,
        }
        .run()
    });
}

/// Training-mode forward: normalises with the batch statistics, which it
/// returns (for the running averages and the backward pass).
#[allow(clippy::too_many_arguments)]
pub fn bn_train_forward(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) -> BnStats {
    let stats = bn_stats(x, c);
    let invstd = stats.invstd(eps);
    let scale: Vec<f32> = gamma.iter().zip(&invstd).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..c).map(|j| beta[j] - stats.mean[j] * scale[j]).collect();
    bn_apply(x, c, &scale, &shift, residual, relu, out);
    stats
}

/// Evaluation-mode forward with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn bn_eval_forward(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    running: &BnStats,
    eps: f64,
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let invstd = running.invstd(eps);
    let scale: Vec<f32> = gamma.iter().zip(&invstd).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..c)
        .map(|j| beta[j] - running.mean[j] * scale[j])
        .collect();
    bn_apply(x, c, &scale, &shift, residual, relu, out);
}

/// Gradients of the affine parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BnParamGrads {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Training-mode backward of `y = relu(bn(x) + residual)`.
///
/// `y` is the forward output when the ReLU was fused (its sign masks `dy`),
/// `None` without ReLU. Writes the input gradient to `dx` and, when given,
/// the residual's gradient (the masked `dy`) to `dres`.
#[allow(clippy::too_many_arguments)]
pub fn bn_train_backward(
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    c: usize,
    gamma: &[f32],
    stats: &BnStats,
    eps: f64,
    dx: &mut [f32],
    dres: Option<&mut [f32]>,
) -> BnParamGrads {
    assert!(c > 0 && x.len().is_multiple_of(c));
    assert!(dy.len() == x.len() && dx.len() == x.len() && gamma.len() == c);
    if let Some(y) = y {
        assert_eq!(y.len(), x.len());
    }
    let rows = x.len() / c;
    // Σ g and Σ g·x per channel.
    let (sg, sgx) = channel_sums(rows, c, |range, s1, s2| {
        let span = range.start * c..range.end * c;
        BackwardSums {
            x: &x[span.clone()],
            y: y.map(|y| &y[span.clone()]),
            dy: &dy[span],
            c,
            s1,
            s2,
        }
        .run()
    });
    let invstd = stats.invstd(eps);
    let n = rows as f64;
    // dx = a·g − b·x + d, per channel (see the module docs of ARCHITECTURE.md).
    let mut a = vec![0.0f32; c];
    let mut b = vec![0.0f32; c];
    let mut d = vec![0.0f32; c];
    let mut dgamma = vec![0.0f32; c];
    for j in 0..c {
        let (m, is) = (f64::from(stats.mean[j]), f64::from(invstd[j]));
        let sum_gxhat = is * (sgx[j] - m * sg[j]);
        dgamma[j] = sum_gxhat as f32;
        let aj = f64::from(gamma[j]) * is;
        let bj = aj * is * sum_gxhat / n;
        a[j] = aj as f32;
        b[j] = bj as f32;
        d[j] = (bj * m - aj * sg[j] / n) as f32;
    }
    let bl = block_rows(rows) * c;
    let body = |blk: usize, dx: &mut [f32], dres: Option<&mut [f32]>| {
        let span = blk * bl..blk * bl + dx.len();
        BackwardDx {
            x: &x[span.clone()],
            y: y.map(|y| &y[span.clone()]),
            dy: &dy[span],
            c,
            a: &a,
            b: &b,
            d: &d,
            dx,
            dres,
        }
        .run()
    };
    match dres {
        Some(dres) => {
            assert_eq!(dres.len(), x.len());
            dx.par_chunks_mut(bl)
                .zip(dres.par_chunks_mut(bl))
                .enumerate()
                .for_each(|(blk, (dx, r))| body(blk, dx, Some(r)));
        }
        None => dx
            .par_chunks_mut(bl)
            .enumerate()
            .for_each(|(blk, dx)| body(blk, dx, None)),
    }
    BnParamGrads {
        gamma: dgamma,
        beta: sg.iter().map(|&s| s as f32).collect(),
    }
}

/// `g = dy` where the fused ReLU passed (`y > 0`), else 0; `dy` without ReLU.
#[inline(always)]
fn mask_row(y: Option<&[f32]>, dy: &[f32], g: &mut [f32]) {
    match y {
        Some(y) => {
            for ((g, &d), &y) in g.iter_mut().zip(dy).zip(y) {
                *g = if y > 0.0 { d } else { 0.0 };
            }
        }
        None => g.copy_from_slice(dy),
    }
}

simd_kernel!(Stats<'a> { x: &'a [f32], c: usize, s1: &'a mut [f64], s2: &'a mut [f64] } => {
    for row in x.chunks_exact(c) {
        for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(row) {
            let v = f64::from(v);
            *a += v;
            *b += v * v;
        }
    }
});

simd_kernel!(Apply<'a> {
    x: &'a [f32],
    res: Option<&'a [f32]>,
    c: usize,
    scale: &'a [f32],
    shift: &'a [f32],
    relu: bool,
    out: &'a mut [f32],
} => {
    for (i, (orow, xrow)) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
        for (((o, &x), &sc), &sh) in orow.iter_mut().zip(xrow).zip(scale).zip(shift) {
            *o = x * sc + sh;
        }
        if let Some(r) = res {
            for (o, &r) in orow.iter_mut().zip(&r[i * c..(i + 1) * c]) {
                *o += r;
            }
        }
        if relu {
            for o in orow.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
});

simd_kernel!(BackwardSums<'a> {
    x: &'a [f32],
    y: Option<&'a [f32]>,
    dy: &'a [f32],
    c: usize,
    s1: &'a mut [f64],
    s2: &'a mut [f64],
} => {
    let mut g = vec![0.0f32; c];
    for (i, (xrow, dyrow)) in x.chunks_exact(c).zip(dy.chunks_exact(c)).enumerate() {
        mask_row(y.map(|y| &y[i * c..(i + 1) * c]), dyrow, &mut g);
        for (((a, b), &g), &x) in s1.iter_mut().zip(s2.iter_mut()).zip(&g).zip(xrow) {
            let g = f64::from(g);
            *a += g;
            *b += g * f64::from(x);
        }
    }
});

simd_kernel!(BackwardDx<'a> {
    x: &'a [f32],
    y: Option<&'a [f32]>,
    dy: &'a [f32],
    c: usize,
    a: &'a [f32],
    b: &'a [f32],
    d: &'a [f32],
    dx: &'a mut [f32],
    dres: Option<&'a mut [f32]>,
} => {
    let mut g = vec![0.0f32; c];
    let mut dres = dres;
    for (i, (dxrow, xrow)) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
        mask_row(y.map(|y| &y[i * c..(i + 1) * c]), &dy[i * c..(i + 1) * c], &mut g);
        for j in 0..c {
            dxrow[j] = a[j] * g[j] - b[j] * xrow[j] + d[j];
        }
        if let Some(r) = dres.as_deref_mut() {
            r[i * c..(i + 1) * c].copy_from_slice(&g);
        }
    }
});
