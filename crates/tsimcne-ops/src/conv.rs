//! 2-D convolution on NHWC activations: forward, input gradient and weight
//! gradient, each an im2col (or col2im) step feeding one big `gemm` per block
//! of output pixels.
//!
//! With channels last, a patch row of the im2col matrix is `k` runs of
//! `k·cin` contiguous floats, the product of a block of patch rows with the
//! `[k·k·cin, cout]` weight matrix is the block of output rows itself (no
//! transposition), and the input gradient is that product's transpose
//! scattered back (col2im). Blocks are sized by the shape alone, never by the
//! thread count, so results are bit-identical for any number of threads.

use rayon::prelude::*;

use crate::gemm::{MatMut, MatRef, matmul};
use crate::simd::simd_kernel;

/// The shape of one convolution: `n` images of `h`×`w`×`cin` (NHWC) convolved
/// with `cout` square `k`×`k` filters at `stride`, zero-padded by `pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Length of one patch row: `k·k·cin`.
    pub fn patch(&self) -> usize {
        self.k * self.k * self.cin
    }

    /// Output pixels over the batch (rows of the im2col matrix).
    pub fn out_rows(&self) -> usize {
        self.n * self.out_h() * self.out_w()
    }

    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.cin
    }

    pub fn output_len(&self) -> usize {
        self.out_rows() * self.cout
    }

    pub fn weight_len(&self) -> usize {
        self.cout * self.patch()
    }

    /// A 1×1 stride-1 convolution is a plain product: no im2col needed.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output rows per block: about 1 MiB of im2col buffer, but at least 256
    /// rows, so that packing the weight matrix (which every `gemm` call does)
    /// stays small next to the product even for 4608-long patches.
    fn block_rows(&self) -> usize {
        ((1 << 18) / self.patch().max(1)).clamp(256, 4096)
    }

    fn check(&self) {
        assert!(
            self.k > 0
                && self.stride > 0
                && self.h + 2 * self.pad >= self.k
                && self.w + 2 * self.pad >= self.k,
            "bad convolution geometry {self:?}"
        );
    }
}

/// PyTorch's `[cout, cin, k, k]` weight as the `[k·k·cin, cout]` matrix the
/// kernels multiply by (row `(i·k + j)·cin + c`, column `o`).
pub fn weight_to_patch_major(w: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(w.len(), g.weight_len());
    let (k, cin, cout) = (g.k, g.cin, g.cout);
    let mut out = vec![0.0; w.len()];
    for o in 0..cout {
        for c in 0..cin {
            for ij in 0..k * k {
                out[(ij * cin + c) * cout + o] = w[(o * cin + c) * k * k + ij];
            }
        }
    }
    out
}

/// The inverse of [`weight_to_patch_major`].
pub fn patch_major_to_weight(pm: &[f32], g: &ConvGeom) -> Vec<f32> {
    assert_eq!(pm.len(), g.weight_len());
    let (k, cin, cout) = (g.k, g.cin, g.cout);
    let mut out = vec![0.0; pm.len()];
    for o in 0..cout {
        for c in 0..cin {
            for ij in 0..k * k {
                out[(o * cin + c) * k * k + ij] = pm[(ij * cin + c) * cout + o];
            }
        }
    }
    out
}

/// An output pixel `(image, row, column)`, walked in row order without
/// divisions.
#[derive(Clone, Copy)]
struct Pixel {
    n: usize,
    oh: usize,
    ow: usize,
}

impl Pixel {
    fn of_row(g: &ConvGeom, r: usize) -> Self {
        let (ho, wo) = (g.out_h(), g.out_w());
        let rem = r % (ho * wo);
        Self {
            n: r / (ho * wo),
            oh: rem / wo,
            ow: rem % wo,
        }
    }

    #[inline(always)]
    fn advance(&mut self, ho: usize, wo: usize) {
        self.ow += 1;
        if self.ow == wo {
            self.ow = 0;
            self.oh += 1;
            if self.oh == ho {
                self.oh = 0;
                self.n += 1;
            }
        }
    }
}

/// Where output pixel `p` reads kernel row `i`: `(input offset of the run's
/// first pixel, first valid tap j, taps)` or `None` when the row is padding.
#[inline(always)]
fn tap_run(g: &ConvGeom, p: Pixel, i: usize) -> Option<(usize, usize, usize)> {
    let hi = (p.oh * g.stride + i) as isize - g.pad as isize;
    if hi < 0 || hi >= g.h as isize {
        return None;
    }
    let w0 = (p.ow * g.stride) as isize - g.pad as isize;
    let j0 = (-w0).max(0) as usize;
    let j1 = ((g.w as isize - w0).min(g.k as isize)).max(j0 as isize) as usize;
    let first = (w0 + j0 as isize) as usize;
    Some((
        ((p.n * g.h + hi as usize) * g.w + first) * g.cin,
        j0,
        j1 - j0,
    ))
}

/// Runs at most this long are copied element by element.
const SHORT_RUN: usize = 32;

/// Fills `cols` (`rows`×patch) with the patches of output rows `r0..r0+rows`.
fn im2col(x: &[f32], g: &ConvGeom, r0: usize, rows: usize, cols: &mut [f32]) {
    let (k, cin, patch) = (g.k, g.cin, g.patch());
    let (ho, wo) = (g.out_h(), g.out_w());
    let mut p = Pixel::of_row(g, r0);
    for dst in cols[..rows * patch].chunks_exact_mut(patch) {
        for (i, seg) in dst.chunks_exact_mut(k * cin).enumerate() {
            match tap_run(g, p, i) {
                None => seg.fill(0.0),
                Some((src, _, taps)) if taps == k => {
                    let run = &x[src..src + k * cin];
                    if run.len() <= SHORT_RUN {
                        // A few floats (the stem's 3×3 RGB taps): an inlined
                        // loop, not a call to memcpy per run.
                        for (d, s) in seg.iter_mut().zip(run) {
                            *d = *s;
                        }
                    } else {
                        seg.copy_from_slice(run);
                    }
                }
                Some((src, j0, taps)) => {
                    seg[..j0 * cin].fill(0.0);
                    seg[j0 * cin..(j0 + taps) * cin].copy_from_slice(&x[src..src + taps * cin]);
                    seg[(j0 + taps) * cin..].fill(0.0);
                }
            }
        }
        p.advance(ho, wo);
    }
}

simd_kernel!(Col2im<'a> {
    cols: &'a [f32],
    g: &'a ConvGeom,
    r0: usize,
    rows: usize,
    dx: &'a mut [f32],
    img0: usize,
} => {
    col2im_add(cols, g, r0, rows, dx, img0)
});

/// Adds the patch gradients `cols` of output rows `r0..r0+rows` into `dx`,
/// which holds the images from `img0` on.
#[inline(always)]
fn col2im_add(cols: &[f32], g: &ConvGeom, r0: usize, rows: usize, dx: &mut [f32], img0: usize) {
    let (k, cin, patch) = (g.k, g.cin, g.patch());
    let (ho, wo) = (g.out_h(), g.out_w());
    let base = img0 * g.h * g.w * cin;
    let mut p = Pixel::of_row(g, r0);
    for src in cols[..rows * patch].chunks_exact(patch) {
        for (i, seg) in src.chunks_exact(k * cin).enumerate() {
            if let Some((dst, j0, taps)) = tap_run(g, p, i) {
                let d = &mut dx[dst - base..dst - base + taps * cin];
                for (d, s) in d.iter_mut().zip(&seg[j0 * cin..(j0 + taps) * cin]) {
                    *d += *s;
                }
            }
        }
        p.advance(ho, wo);
    }
}

thread_local! {
    /// The im2col buffer of each thread, kept between calls: a fresh
    /// megabyte per block would cost an allocation and its zeroing each time.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer, `len` long. Its contents are
/// stale: `f` must overwrite what it reads. (`f` must not call back in.)
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut v = s.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

/// Forward: `out[n, oh, ow, o] = Σ x[n, ·, ·, c] · w[o, c, ·, ·]`, with the
/// weight in patch-major form (`[k·k·cin, cout]`, see [`weight_to_patch_major`]).
pub fn conv_forward(x: &[f32], g: &ConvGeom, w_pm: &[f32], out: &mut [f32]) {
    g.check();
    assert_eq!(x.len(), g.input_len());
    assert_eq!(w_pm.len(), g.weight_len());
    assert_eq!(out.len(), g.output_len());
    let (patch, cout, block) = (g.patch(), g.cout, g.block_rows());
    let rhs = MatRef::row_major(w_pm, patch, cout);
    out.par_chunks_mut(block * cout)
        .enumerate()
        .for_each(|(b, out)| {
            let (r0, rows) = (b * block, out.len() / cout);
            if g.pointwise() {
                let lhs = MatRef::row_major(&x[r0 * patch..(r0 + rows) * patch], rows, patch);
                matmul(MatMut::row_major(out, rows, cout), false, lhs, rhs);
            } else {
                with_scratch(rows * patch, |cols| {
                    im2col(x, g, r0, rows, cols);
                    let lhs = MatRef::row_major(cols, rows, patch);
                    matmul(MatMut::row_major(out, rows, cout), false, lhs, rhs);
                });
            }
        });
}

/// Input gradient: `dx (+)= col2im(dy · w_pmᵀ)`. With `accumulate`, adds to
/// what `dx` holds (a residual branch's gradient), else overwrites it.
pub fn conv_backward_data(
    dy: &[f32],
    g: &ConvGeom,
    w_pm: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    g.check();
    assert_eq!(dy.len(), g.output_len());
    assert_eq!(w_pm.len(), g.weight_len());
    assert_eq!(dx.len(), g.input_len());
    let (patch, cout, block) = (g.patch(), g.cout, g.block_rows());
    let rhs = MatRef::row_major(w_pm, patch, cout).t(); // [cout, patch]
    if g.pointwise() {
        dx.par_chunks_mut(block * patch)
            .enumerate()
            .for_each(|(b, dx)| {
                let (r0, rows) = (b * block, dx.len() / patch);
                let lhs = MatRef::row_major(&dy[r0 * cout..(r0 + rows) * cout], rows, cout);
                matmul(MatMut::row_major(dx, rows, patch), accumulate, lhs, rhs);
            });
        return;
    }
    // Whole images per task, so the scatter of one task never meets another's.
    let per_image = g.out_h() * g.out_w();
    let images = (block / per_image).max(1);
    let image_len = g.h * g.w * g.cin;
    dx.par_chunks_mut(images * image_len)
        .enumerate()
        .for_each(|(b, dx)| {
            if !accumulate {
                dx.fill(0.0);
            }
            let img0 = b * images;
            let rows_here = dx.len() / image_len * per_image;
            let r_begin = img0 * per_image;
            with_scratch(block * patch, |cols| {
                let mut r = r_begin;
                while r < r_begin + rows_here {
                    let rows = block.min(r_begin + rows_here - r);
                    let lhs = MatRef::row_major(&dy[r * cout..(r + rows) * cout], rows, cout);
                    matmul(MatMut::row_major(cols, rows, patch), false, lhs, rhs);
                    Col2im {
                        cols,
                        g,
                        r0: r,
                        rows,
                        dx: &mut *dx,
                        img0,
                    }
                    .run();
                    r += rows;
                }
            });
        });
}

/// The most partial weight gradients summed at the end: blocks are dealt to
/// this many lanes round-robin, so the summation order (and every bit of the
/// result) is fixed by the shape alone.
const WEIGHT_LANES: usize = 4;

/// Weight gradient in PyTorch's `[cout, cin, k, k]` layout.
pub fn conv_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let dwt = conv_backward_weight_t(x, dy, g);
    let (k, cin, cout, patch) = (g.k, g.cin, g.cout, g.patch());
    let mut out = vec![0.0; dwt.len()];
    for o in 0..cout {
        for c in 0..cin {
            for ij in 0..k * k {
                out[(o * cin + c) * k * k + ij] = dwt[o * patch + ij * cin + c];
            }
        }
    }
    out
}

/// The weight gradient as `[cout, k·k·cin]`: `Σ_blocks dyᵀ · cols`. (This
/// orientation keeps the long patch axis contiguous in the output, which
/// suits the gemm kernels when `cout` is small.)
fn conv_backward_weight_t(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    g.check();
    assert_eq!(x.len(), g.input_len());
    assert_eq!(dy.len(), g.output_len());
    let (patch, cout, block) = (g.patch(), g.cout, g.block_rows());
    let rows_total = g.out_rows();
    let blocks = rows_total.div_ceil(block);
    let lanes = blocks.clamp(1, WEIGHT_LANES);
    let partials: Vec<Vec<f32>> = (0..lanes)
        .into_par_iter()
        .map(|lane| {
            let mut acc = vec![0.0f32; patch * cout];
            for (i, b) in (lane..blocks).step_by(lanes).enumerate() {
                let r0 = b * block;
                let rows = block.min(rows_total - r0);
                let dy = MatRef::row_major(&dy[r0 * cout..(r0 + rows) * cout], rows, cout);
                let dst = MatMut::row_major(&mut acc, cout, patch);
                if g.pointwise() {
                    let lhs = MatRef::row_major(&x[r0 * patch..(r0 + rows) * patch], rows, patch);
                    matmul(dst, i > 0, dy.t(), lhs);
                } else {
                    with_scratch(rows * patch, |cols| {
                        im2col(x, g, r0, rows, cols);
                        matmul(dst, i > 0, dy.t(), MatRef::row_major(cols, rows, patch));
                    });
                }
            }
            acc
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0.0; patch * cout]);
    for p in parts {
        crate::simd::add_assign(&mut total, &p);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visits every (output, input, weight) index triple of the definition,
    /// NHWC activations and a `[cout, cin, k, k]` weight.
    fn for_each_tap(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
        let (ho, wo) = (g.out_h(), g.out_w());
        for n in 0..g.n {
            for oh in 0..ho {
                for ow in 0..wo {
                    for i in 0..g.k {
                        for j in 0..g.k {
                            let hi = (oh * g.stride + i) as isize - g.pad as isize;
                            let wi = (ow * g.stride + j) as isize - g.pad as isize;
                            if hi < 0 || wi < 0 || hi >= g.h as isize || wi >= g.w as isize {
                                continue;
                            }
                            for o in 0..g.cout {
                                for c in 0..g.cin {
                                    f(
                                        ((n * ho + oh) * wo + ow) * g.cout + o,
                                        ((n * g.h + hi as usize) * g.w + wi as usize) * g.cin + c,
                                        ((o * g.cin + c) * g.k + i) * g.k + j,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// y = Σ x·w, dx = Σ dy·w, dw = Σ dy·x straight from the definition, in f64.
    fn naive(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeom) -> [Vec<f32>; 3] {
        let (mut y, mut dx, mut dw) = (
            vec![0.0f64; g.output_len()],
            vec![0.0f64; g.input_len()],
            vec![0.0f64; g.weight_len()],
        );
        for_each_tap(g, |yo, xi, wi| {
            y[yo] += f64::from(x[xi]) * f64::from(w[wi]);
            dx[xi] += f64::from(dy[yo]) * f64::from(w[wi]);
            dw[wi] += f64::from(dy[yo]) * f64::from(x[xi]);
        });
        [y, dx, dw].map(|v| v.into_iter().map(|v| v as f32).collect())
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    fn geoms() -> Vec<ConvGeom> {
        let g = |n, h, w, cin, cout, k, stride, pad| ConvGeom {
            n,
            h,
            w,
            cin,
            cout,
            k,
            stride,
            pad,
        };
        vec![
            g(2, 7, 5, 3, 4, 3, 1, 1),
            g(3, 9, 9, 5, 6, 3, 2, 1),
            g(1, 8, 8, 4, 3, 1, 1, 0),
            g(2, 8, 6, 4, 5, 1, 2, 0),
            g(1, 3, 3, 2, 2, 3, 1, 1),
            g(2, 6, 6, 3, 2, 3, 1, 0),
            // Many blocks: exercises block edges inside images.
            g(3, 40, 40, 9, 7, 3, 1, 1),
        ]
    }

    /// The forward and both gradients against the definition.
    #[test]
    fn forward_and_both_gradients_match_the_definition() {
        for (t, g) in geoms().into_iter().enumerate() {
            let x = values(g.input_len(), 1 + t as u64);
            let w = values(g.weight_len(), 100 + t as u64);
            let dy = values(g.output_len(), 200 + t as u64);
            let [want_y, want_dx, want_dw] = naive(&x, &w, &dy, &g);
            let pm = weight_to_patch_major(&w, &g);
            assert_eq!(patch_major_to_weight(&pm, &g), w);
            let mut out = vec![0.0; g.output_len()];
            conv_forward(&x, &g, &pm, &mut out);
            close(&out, &want_y, 1e-5);

            let mut dx = vec![0.5; g.input_len()];
            conv_backward_data(&dy, &g, &pm, &mut dx, false);
            close(&dx, &want_dx, 1e-5);
            let mut dx_acc = vec![0.5; g.input_len()];
            conv_backward_data(&dy, &g, &pm, &mut dx_acc, true);
            let shifted: Vec<f32> = want_dx.iter().map(|v| v + 0.5).collect();
            close(&dx_acc, &shifted, 1e-5);

            let dw = conv_backward_weight(&x, &dy, &g);
            close(&dw, &want_dw, 1e-4);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let g = geoms()[6];
        let x = values(g.input_len(), 5);
        let pm = weight_to_patch_major(&values(g.weight_len(), 6), &g);
        let dy = values(g.output_len(), 7);
        let run = || {
            let mut out = vec![0.0; g.output_len()];
            conv_forward(&x, &g, &pm, &mut out);
            let mut dx = vec![0.0; g.input_len()];
            conv_backward_data(&dy, &g, &pm, &mut dx, false);
            (out, dx, conv_backward_weight(&x, &dy, &g))
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(run);
        assert!(one == three);
    }
}
