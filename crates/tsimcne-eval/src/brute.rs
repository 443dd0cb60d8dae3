//! Exact k-nearest neighbours in high dimensions: brute force, pruned by a
//! cheap lower bound.
//!
//! Every point `x` gets a short "sketch" `p' = [Qᵀ(x − μ), ‖R(x − μ)‖]`:
//! its coordinates on `PROJ` orthonormal directions `Q` (the top principal
//! directions of a sample, by subspace iteration) plus the length of the
//! residual `R(x − μ)` outside them. Because `Q` is orthonormal,
//! `‖x − y‖² ≥ ‖p'_x − p'_y‖²` (Pythagoras plus the reverse triangle
//! inequality on the residuals). For a block of queries the bounds to every
//! base point come from one `gemm` of sketches; a query then takes the k
//! base points with the smallest bounds, computes their exact distances
//! (the k-th is an upper bound on the true k-th distance `D`) and computes
//! exact distances only for the points whose bound is at most `D`. On
//! Fashion-MNIST pixels that is about 2% of the points.
//!
//! **Invariant:** the result is exact: the bound is loosened by a relative
//! `SLACK` far above its floating-point error, exact distances are integers
//! for u8 data and f64 sums for f32 data, and ties are broken by index.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::matmul::matmul_nt;
use crate::topk::TopK;

/// Directions in the sketch (plus one residual coordinate).
const PROJ: usize = 32;
/// Queries per `gemm` block.
const BLOCK: usize = 64;
/// Rows sampled to find the principal directions.
const SAMPLE: usize = 4096;
/// Relative slack on the bound: its f32 rounding error is below 1e-6 of
/// `‖x − μ‖² + ‖y − μ‖²`.
const SLACK: f64 = 1e-5;

/// A matrix of points, one row each.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    U8 { dim: usize, values: &'a [u8] },
    F32 { dim: usize, values: &'a [f32] },
}

impl Data<'_> {
    pub fn dim(&self) -> usize {
        match *self {
            Data::U8 { dim, .. } | Data::F32 { dim, .. } => dim,
        }
    }

    pub fn rows(&self) -> usize {
        match *self {
            Data::U8 { dim, values } => values.len() / dim.max(1),
            Data::F32 { dim, values } => values.len() / dim.max(1),
        }
    }

    /// Row `i` minus `mean`, in f64.
    fn centred(&self, i: usize, mean: &[f64], out: &mut [f64]) {
        let d = self.dim();
        match *self {
            Data::U8 { values, .. } => {
                for ((o, &v), m) in out.iter_mut().zip(&values[i * d..(i + 1) * d]).zip(mean) {
                    *o = f64::from(v) - m;
                }
            }
            Data::F32 { values, .. } => {
                for ((o, &v), m) in out.iter_mut().zip(&values[i * d..(i + 1) * d]).zip(mean) {
                    *o = f64::from(v) - m;
                }
            }
        }
    }

    /// The exact squared distance between rows `i` and `j`.
    #[inline(always)]
    pub fn exact(&self, i: usize, j: usize) -> f64 {
        self.exact_within(i, j, f64::INFINITY)
    }

    /// The exact squared distance between rows `i` and `j` if it is at
    /// most `limit`; otherwise possibly just some value above `limit`
    /// (the sum stops early once it passes the limit: all its terms are
    /// non-negative).
    #[inline(always)]
    pub fn exact_within(&self, i: usize, j: usize, limit: f64) -> f64 {
        const STEP: usize = 128;
        let d = self.dim();
        match *self {
            Data::U8 { values, .. } => {
                let (a, b) = (&values[i * d..(i + 1) * d], &values[j * d..(j + 1) * d]);
                let mut total: i64 = 0;
                for (sa, sb) in a.chunks(STEP).zip(b.chunks(STEP)) {
                    // Each term ≤ 255², at most 8 per lane: exact in i32.
                    let mut acc = [0i32; 16];
                    let (ca, cb) = (sa.chunks_exact(16), sb.chunks_exact(16));
                    let (ra, rb) = (ca.remainder(), cb.remainder());
                    for (x, y) in ca.zip(cb) {
                        for t in 0..16 {
                            let v = i32::from(i16::from(x[t]) - i16::from(y[t]));
                            acc[t] += v * v;
                        }
                    }
                    for (&x, &y) in ra.iter().zip(rb) {
                        let v = i64::from(x) - i64::from(y);
                        total += v * v;
                    }
                    total += acc.iter().map(|&v| i64::from(v)).sum::<i64>();
                    if total as f64 > limit {
                        break;
                    }
                }
                total as f64
            }
            Data::F32 { values, .. } => {
                let (a, b) = (&values[i * d..(i + 1) * d], &values[j * d..(j + 1) * d]);
                let mut total = 0.0;
                for (sa, sb) in a.chunks(STEP).zip(b.chunks(STEP)) {
                    // One left-to-right sum, like `exact`'s.
                    for (&x, &y) in sa.iter().zip(sb) {
                        let t = f64::from(x) - f64::from(y);
                        total += t * t;
                    }
                    if total > limit {
                        break;
                    }
                }
                total
            }
        }
    }
}

/// Sketches of every row: `e` f32 coordinates and the squared norm of the
/// centred row.
struct Sketches {
    e: usize,
    coords: Vec<f32>,
    norms: Vec<f64>,
}

/// The exact `k` nearest base rows of every query row, leaving out the
/// query itself; `k` indices per query in (distance, index) order.
pub fn k_nearest(
    data: Data<'_>,
    base: &[u32],
    queries: &[u32],
    k: usize,
    threads: usize,
) -> Vec<u32> {
    let threads = threads.max(1);
    let sk = sketch(data, base, threads);
    let e = sk.e;

    // Rows near each other in sketch space go near each other in memory,
    // so a query's candidates are few cache-friendly runs, and consecutive
    // queries (visited in that order) reuse them from cache.
    let order = locality_order(&sk.coords, e, data.rows());
    let mut rank = vec![0u32; order.len()];
    for (p, &r) in order.iter().enumerate() {
        rank[r as usize] = p as u32;
    }
    let owned = data.permuted(&order, base);
    let pdata = owned.as_data();
    let mut base_pos: Vec<u32> = base.iter().map(|&r| rank[r as usize]).collect();
    base_pos.sort_unstable();
    let base_orig: Vec<u32> = base_pos.iter().map(|&p| order[p as usize]).collect();

    // Base sketches, contiguous.
    let mut pb = Vec::with_capacity(base.len() * e);
    let mut nb: Vec<f32> = Vec::with_capacity(base.len());
    for &r in &base_orig {
        let r = r as usize;
        pb.extend_from_slice(&sk.coords[r * e..(r + 1) * e]);
        nb.push(sk.norms[r] as f32);
    }
    let mut visit: Vec<usize> = (0..queries.len()).collect();
    visit.sort_by_key(|&i| rank[queries[i] as usize]);
    let order = visit;

    let out = Mutex::new(vec![0u32; queries.len() * k]);
    let next = AtomicUsize::new(0);
    let blocks = order.len().div_ceil(BLOCK);
    std::thread::scope(|s| {
        for _ in 0..threads.min(blocks.max(1)) {
            s.spawn(|| {
                let mut pq = Vec::with_capacity(BLOCK * e);
                let mut lb = vec![0f32; BLOCK * base.len()];
                let mut seeds: Vec<TopK> = (0..BLOCK).map(|_| TopK::new(k)).collect();
                let mut tops: Vec<TopK> = (0..BLOCK).map(|_| TopK::new(k)).collect();
                let mut found = Vec::with_capacity(BLOCK * k);
                let arch = pulp::Arch::new();
                let ctx = Ctx {
                    data: pdata,
                    base_pos: &base_pos,
                    base_orig: &base_orig,
                    nb: &nb,
                };
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= blocks {
                        break;
                    }
                    let block = &order[b * BLOCK..((b + 1) * BLOCK).min(order.len())];
                    pq.clear();
                    for &qi in block {
                        let r = queries[qi] as usize;
                        pq.extend_from_slice(&sk.coords[r * e..(r + 1) * e]);
                    }
                    let lb = &mut lb[..block.len() * base.len()];
                    matmul_nt(&pq, &pb, lb, e);
                    let qs: Vec<Query> = block
                        .iter()
                        .map(|&qi| {
                            let q = queries[qi];
                            Query {
                                orig: q,
                                pos: rank[q as usize],
                                norm: sk.norms[q as usize],
                            }
                        })
                        .collect();
                    arch.dispatch(SearchBlock {
                        ctx: &ctx,
                        queries: &qs,
                        bounds: lb,
                        seeds: &mut seeds[..block.len()],
                        tops: &mut tops[..block.len()],
                    });
                    found.clear();
                    for top in &tops[..block.len()] {
                        found.extend(top.items().iter().map(|&(_, j)| j));
                    }
                    let mut out = out.lock().expect("no thread panicked");
                    for (bi, &qi) in block.iter().enumerate() {
                        out[qi * k..(qi + 1) * k].copy_from_slice(&found[bi * k..(bi + 1) * k]);
                    }
                }
            });
        }
    });
    out.into_inner().expect("no thread panicked")
}

/// A query row: its original index, its row in the reordered data and
/// the squared norm of its centred row.
#[derive(Clone, Copy, Debug)]
struct Query {
    orig: u32,
    pos: u32,
    norm: f64,
}

/// The exact neighbours of a block of queries into `tops`, given `bounds`
/// = their sketch dot products with every base point (one row per query,
/// overwritten with the lower bounds).
///
/// Inlined into `pulp`'s dispatch, so its loops are vectorised for the
/// CPU's widest instruction set.
#[inline(always)]
fn search_block(
    ctx: &Ctx<'_>,
    queries: &[Query],
    bounds: &mut [f32],
    seeds: &mut [TopK],
    tops: &mut [TopK],
) {
    let Ctx {
        data,
        base_pos,
        base_orig,
        nb,
    } = *ctx;
    const CHUNK: usize = 16;
    /// Base points per tile: their rows stay in cache while every query
    /// of the block checks them.
    const TILE: usize = 512;
    let n = nb.len();
    let mut limits = vec![0f32; queries.len()];
    for (qi, q) in queries.iter().enumerate() {
        let row = &mut bounds[qi * n..(qi + 1) * n];
        // Lower bounds, loosened by SLACK (their rounding error is far smaller).
        let nq = q.norm as f32;
        let shrink = 1.0 - SLACK as f32;
        for (b, &nj) in row.iter_mut().zip(nb) {
            *b = (nq + nj) * shrink - 2.0 * *b;
        }
        // Pass 1: the k smallest bounds. Their exact distances bound the
        // k-th nearest distance from above. Whole chunks above the current
        // k-th smallest bound are skipped with one vectorised test.
        let seed = &mut seeds[qi];
        seed.clear();
        let mut worst = f32::INFINITY;
        for (c, chunk) in row.chunks(CHUNK).enumerate() {
            if chunk.iter().map(|&b| u32::from(b < worst)).sum::<u32>() == 0 {
                continue;
            }
            for (i, &b) in chunk.iter().enumerate() {
                let j = c * CHUNK + i;
                if b < worst && base_orig[j] != q.orig {
                    seed.push(f64::from(b), j as u32);
                    worst = seed.worst() as f32;
                }
            }
        }
        let top = &mut tops[qi];
        top.clear();
        for &(_, j) in seed.items() {
            let j = j as usize;
            top.push(
                data.exact(q.pos as usize, base_pos[j] as usize),
                base_orig[j],
            );
        }
        // Rounded up, so the f32 limit never excludes a tie.
        limits[qi] = next_up(top.worst() as f32);
    }
    // Pass 2, tile by tile: every other point whose bound does not exclude
    // it; each query's limit shrinks as nearer points turn up.
    for start in (0..n).step_by(TILE) {
        let end = (start + TILE).min(n);
        for (qi, q) in queries.iter().enumerate() {
            let row = &bounds[qi * n + start..qi * n + end];
            let (seed, top, limit) = (&seeds[qi], &mut tops[qi], &mut limits[qi]);
            for (c, chunk) in row.chunks(CHUNK).enumerate() {
                if chunk.iter().map(|&b| u32::from(b <= *limit)).sum::<u32>() == 0 {
                    continue;
                }
                for (i, &b) in chunk.iter().enumerate() {
                    let j = start + c * CHUNK + i;
                    if b <= *limit
                        && base_orig[j] != q.orig
                        && !seed.items().iter().any(|&(_, s)| s as usize == j)
                    {
                        let d =
                            data.exact_within(q.pos as usize, base_pos[j] as usize, top.worst());
                        top.push(d, base_orig[j]);
                        *limit = next_up(top.worst() as f32);
                    }
                }
            }
        }
    }
}

/// One call of [`search_block`] as a `pulp` operation: `with_simd` is
/// inlined into a function compiled for the detected instruction set (AVX2
/// or AVX-512), and `search_block` into it, so its loops use the wide
/// registers.
struct SearchBlock<'a, 'b> {
    ctx: &'a Ctx<'b>,
    queries: &'a [Query],
    bounds: &'a mut [f32],
    seeds: &'a mut [TopK],
    tops: &'a mut [TopK],
}

impl pulp::WithSimd for SearchBlock<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        search_block(self.ctx, self.queries, self.bounds, self.seeds, self.tops);
    }
}

/// What every query of one search shares.
struct Ctx<'a> {
    /// The points, rows in locality order.
    data: Data<'a>,
    /// Base points: their rows in `data`, and their original row indices.
    base_pos: &'a [u32],
    base_orig: &'a [u32],
    /// Squared norms of the centred base points.
    nb: &'a [f32],
}

/// A row order in which rows close in sketch space are close together: the
/// leaves of a median-split tree on the leading sketch coordinates.
fn locality_order(coords: &[f32], e: usize, n: usize) -> Vec<u32> {
    const LEAF: usize = 32;
    let dims = e.min(8);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut stack = vec![(0usize, n)];
    while let Some((lo, hi)) = stack.pop() {
        if hi - lo <= LEAF {
            continue;
        }
        let part = &mut order[lo..hi];
        let spread = |t: usize| {
            let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
            for &r in part.iter() {
                let v = coords[r as usize * e + t];
                a = a.min(v);
                b = b.max(v);
            }
            b - a
        };
        let axis = (0..dims)
            .max_by(|&a, &b| spread(a).total_cmp(&spread(b)))
            .unwrap_or(0);
        let mid = part.len() / 2;
        part.select_nth_unstable_by(mid, |&a, &b| {
            coords[a as usize * e + axis].total_cmp(&coords[b as usize * e + axis])
        });
        stack.push((lo, lo + mid));
        stack.push((lo + mid, hi));
    }
    order
}

/// A reordered copy of a `Data`.
enum Owned {
    U8 { dim: usize, values: Vec<u8> },
    F32 { dim: usize, values: Vec<f32> },
}

impl Owned {
    fn as_data(&self) -> Data<'_> {
        match self {
            Owned::U8 { dim, values } => Data::U8 { dim: *dim, values },
            Owned::F32 { dim, values } => Data::F32 { dim: *dim, values },
        }
    }
}

impl Data<'_> {
    /// The rows in `order`. u8 rows also get their columns sorted by
    /// decreasing variance over `base`, so that a distance passes its limit
    /// early (integer sums do not depend on the order of their terms).
    fn permuted(&self, order: &[u32], base: &[u32]) -> Owned {
        fn gather<T: Copy>(values: &[T], dim: usize, order: &[u32]) -> Vec<T> {
            let mut out = Vec::with_capacity(order.len() * dim);
            for &r in order {
                out.extend_from_slice(&values[r as usize * dim..(r as usize + 1) * dim]);
            }
            out
        }
        match *self {
            Data::U8 { dim, values } => {
                let s = base.len().min(SAMPLE);
                let mut sum = vec![0f64; dim];
                let mut sq = vec![0f64; dim];
                for i in 0..s {
                    let r = base[i * base.len() / s] as usize;
                    for (t, &v) in values[r * dim..(r + 1) * dim].iter().enumerate() {
                        sum[t] += f64::from(v);
                        sq[t] += f64::from(v) * f64::from(v);
                    }
                }
                let var: Vec<f64> = (0..dim)
                    .map(|t| sq[t] - sum[t] * sum[t] / s as f64)
                    .collect();
                let mut cols: Vec<usize> = (0..dim).collect();
                cols.sort_by(|&a, &b| var[b].total_cmp(&var[a]));
                let mut out = Vec::with_capacity(order.len() * dim);
                for &r in order {
                    let row = &values[r as usize * dim..(r as usize + 1) * dim];
                    out.extend(cols.iter().map(|&c| row[c]));
                }
                Owned::U8 { dim, values: out }
            }
            Data::F32 { dim, values } => Owned::F32 {
                dim,
                values: gather(values, dim, order),
            },
        }
    }
}

/// The smallest f32 above `x` (for finite `x`); infinity stays infinity.
#[inline(always)]
fn next_up(x: f32) -> f32 {
    if x.is_finite() {
        let b = x.to_bits();
        let up = if x >= 0.0 {
            b + 1
        } else if b == 0x8000_0000 {
            1
        } else {
            b - 1
        };
        f32::from_bits(up)
    } else {
        x
    }
}

/// Sketches of every row of `data`, with directions fitted to `base`.
fn sketch(data: Data<'_>, base: &[u32], threads: usize) -> Sketches {
    let d = data.dim();
    let n = data.rows();
    let mut mean = vec![0f64; d];
    let mut row = vec![0f64; d];
    let zero = vec![0f64; d];
    for &r in base {
        data.centred(r as usize, &zero, &mut row);
        for (m, v) in mean.iter_mut().zip(&row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= base.len().max(1) as f64;
    }
    // Low dimensions: the sketch is the centred point itself (bound = exact
    // up to rounding).
    let basis = (d > PROJ + 1).then(|| principal_directions(data, base, &mean));
    let e = if basis.is_some() { PROJ + 1 } else { d };

    let mut coords = vec![0f32; n * e];
    let mut norms = vec![0f64; n];
    const CHUNK: usize = 1024;
    let per = n.div_ceil(threads).div_ceil(CHUNK).max(1) * CHUNK;
    std::thread::scope(|s| {
        for ((coords, norms), t) in coords
            .chunks_mut(per * e)
            .zip(norms.chunks_mut(per))
            .zip(0..)
        {
            let (mean, basis) = (&mean, &basis);
            s.spawn(move || {
                let first = t * per;
                let mut x = vec![0f64; CHUNK * d];
                let mut p = vec![0f64; CHUNK * PROJ];
                for (c, (coords, norms)) in coords
                    .chunks_mut(CHUNK * e)
                    .zip(norms.chunks_mut(CHUNK))
                    .enumerate()
                {
                    let rows = norms.len();
                    let start = first + c * CHUNK;
                    for i in 0..rows {
                        let xi = &mut x[i * d..(i + 1) * d];
                        data.centred(start + i, mean, xi);
                        norms[i] = xi.iter().map(|v| v * v).sum();
                    }
                    match basis {
                        None => {
                            for (o, v) in coords.iter_mut().zip(&x[..rows * d]) {
                                *o = *v as f32;
                            }
                        }
                        Some(q) => {
                            let p = &mut p[..rows * PROJ];
                            matmul_nt(&x[..rows * d], q, p, d);
                            for i in 0..rows {
                                let pi = &p[i * PROJ..(i + 1) * PROJ];
                                let inside: f64 = pi.iter().map(|v| v * v).sum();
                                let o = &mut coords[i * e..(i + 1) * e];
                                for (o, v) in o.iter_mut().zip(pi) {
                                    *o = *v as f32;
                                }
                                o[PROJ] = (norms[i] - inside).max(0.0).sqrt() as f32;
                            }
                        }
                    }
                }
            });
        }
    });
    Sketches { e, coords, norms }
}

/// `PROJ` orthonormal rows (`PROJ × d`, row-major) spanning roughly the top
/// principal directions of a sample of `base`, by subspace iteration.
fn principal_directions(data: Data<'_>, base: &[u32], mean: &[f64]) -> Vec<f64> {
    let d = data.dim();
    let s = base.len().min(SAMPLE);
    // A fixed, spread sample: every (len/s)-th base row.
    let mut a = vec![0f64; s * d];
    for i in 0..s {
        let r = base[i * base.len() / s] as usize;
        data.centred(r, mean, &mut a[i * d..(i + 1) * d]);
    }
    let mut at = vec![0f64; d * s];
    for i in 0..s {
        for t in 0..d {
            at[t * s + i] = a[i * d + t];
        }
    }
    let mut rng = tsimcne_rng::SplitMix64::keyed(&[0x6b6e6e, d as u64]);
    let mut q: Vec<f64> = (0..PROJ * d).map(|_| rng.normal()).collect();
    orthonormalise(&mut q, d);
    let mut y = vec![0f64; s * PROJ];
    let mut yt = vec![0f64; PROJ * s];
    for _ in 0..4 {
        matmul_nt(&a, &q, &mut y, d); // [s, PROJ] = A Qᵀ
        for i in 0..s {
            for c in 0..PROJ {
                yt[c * s + i] = y[i * PROJ + c];
            }
        }
        matmul_nt(&yt, &at, &mut q, s); // [PROJ, d] = (A Qᵀ)ᵀ A
        orthonormalise(&mut q, d);
    }
    q
}

/// Modified Gram–Schmidt on the rows of `q` (twice, for orthogonality to
/// rounding level). A row that collapses becomes zero, which keeps the bound
/// valid (it only loosens it).
fn orthonormalise(q: &mut [f64], d: usize) {
    let rows = q.len() / d;
    for _ in 0..2 {
        for i in 0..rows {
            for j in 0..i {
                let (done, rest) = q.split_at_mut(i * d);
                let qj = &done[j * d..(j + 1) * d];
                let qi = &mut rest[..d];
                let dot: f64 = qi.iter().zip(qj).map(|(a, b)| a * b).sum();
                for (a, b) in qi.iter_mut().zip(qj) {
                    *a -= dot * b;
                }
            }
            let qi = &mut q[i * d..(i + 1) * d];
            let norm = qi.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 1e-12 {
                qi.iter_mut().for_each(|v| *v /= norm);
            } else {
                qi.iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
}
