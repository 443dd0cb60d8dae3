//! `a · bᵀ` through the `gemm` crate (runtime-dispatched AVX-512/AVX2/NEON
//! kernels), behind a safe, bounds-checked interface.
#![allow(unsafe_code)]

/// `out[i·n + j] = Σ_t a[i·k + t] · b[j·k + t]` for row-major `a` (m×k),
/// `b` (n×k) and `out` (m×n), on one thread.
pub fn matmul_nt<T: Copy + 'static + num_one::One>(a: &[T], b: &[T], out: &mut [T], k: usize) {
    assert!(k > 0 && a.len().is_multiple_of(k) && b.len().is_multiple_of(k));
    let (m, n) = (a.len() / k, b.len() / k);
    assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the strides describe exactly the slices above (asserted), and
    // `out` does not alias `a` or `b` (it is a unique borrow). `read_dst` is
    // false, so `out` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The element types `matmul_nt` is used with.
pub mod num_one {
    pub trait One {
        fn one() -> Self;
        fn zero() -> Self;
    }
    impl One for f32 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
    impl One for f64 {
        fn one() -> Self {
            1.0
        }
        fn zero() -> Self {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop() {
        let k = 37;
        let a: Vec<f64> = (0..5 * k)
            .map(|v| ((v * 7919) % 101) as f64 - 50.0)
            .collect();
        let b: Vec<f64> = (0..9 * k)
            .map(|v| ((v * 104729) % 89) as f64 - 44.0)
            .collect();
        let mut out = vec![0.0; 45];
        matmul_nt(&a, &b, &mut out, k);
        for i in 0..5 {
            for j in 0..9 {
                let want: f64 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert_eq!(out[i * 9 + j], want);
            }
        }
    }
}
