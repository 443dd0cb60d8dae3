//! Strided matrix products through the `gemm` crate (runtime-dispatched
//! AVX-512/AVX2 kernels), behind a safe, bounds-checked interface. This is
//! the crate's only `unsafe`.
#![allow(unsafe_code)]

/// A read-only strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows`×`cols` matrix in the first `rows·cols` elements.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// Any strides; panics if an element would fall outside `data`.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view out of bounds"
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A row-major `rows`×`cols` output matrix.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatMut<'a> {
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(rows * cols <= data.len(), "matrix view out of bounds");
        Self { data, rows, cols }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, on the
/// calling thread (callers parallelise over blocks themselves, which keeps
/// every result independent of the thread count).
pub fn matmul(dst: MatMut<'_>, accumulate: bool, lhs: MatRef<'_>, rhs: MatRef<'_>) {
    assert_eq!(lhs.rows, dst.rows, "lhs rows");
    assert_eq!(rhs.cols, dst.cols, "rhs cols");
    assert_eq!(lhs.cols, rhs.rows, "inner dimension");
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.data[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every view was bounds-checked at construction (the row-major
    // `dst` covers m·n elements of its slice), `dst` is a unique borrow so it
    // aliases neither operand, and its row-major strides never map two
    // elements to one address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for t in 0..a.cols {
                    s += f64::from(a.data[i * a.rs + t * a.cs])
                        * f64::from(b.data[t * b.rs + j * b.cs]);
                }
                out[i * b.cols + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn transposed_views_and_accumulation_match_a_plain_loop() {
        let a: Vec<f32> = (0..7 * 5).map(|v| ((v * 37) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..5 * 3).map(|v| ((v * 13) % 7) as f32 - 3.0).collect();
        // a as 7×5, and as the transpose of a 5×7 matrix.
        let a1 = MatRef::row_major(&a, 7, 5);
        let a2 = MatRef::strided(&a, 5, 7, 1, 5).t();
        let bm = MatRef::row_major(&b, 5, 3);
        let want = naive(a1, bm);
        for lhs in [a1, a2] {
            let mut out = vec![1.0; 21];
            matmul(MatMut::row_major(&mut out, 7, 3), false, lhs, bm);
            assert_eq!(out, want);
            matmul(MatMut::row_major(&mut out, 7, 3), true, lhs, bm);
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_eq!(out, twice);
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_are_bounds_checked() {
        let a = vec![0.0; 10];
        let _ = MatRef::strided(&a, 3, 4, 4, 1);
    }
}
