//! Element-wise loops compiled for the best instruction set present (AVX-512,
//! AVX2, …) through `pulp`'s run-time dispatch.
//!
//! A closure handed to `Arch::dispatch` is not reliably inlined into the
//! function that carries the target features (a loop-sized closure body stays
//! a separate, baseline-SSE2 function), so each kernel is a struct whose
//! `with_simd` calls an `#[inline(always)]` function: that always lands in
//! the vectorised context.

/// Declares `$name`, a struct of the given fields whose `run()` executes
/// `$body` (with the fields in scope) under the widest available SIMD level.
macro_rules! simd_kernel {
    ($name:ident<$lt:lifetime> { $($field:ident : $ty:ty),* $(,)? } => $body:block) => {
        struct $name<$lt> { $($field: $ty),* }

        impl<$lt> pulp::WithSimd for $name<$lt> {
            type Output = ();

            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _simd: S) {
                let Self { $($field),* } = self;
                $body
            }
        }

        impl<$lt> $name<$lt> {
            fn run(self) {
                pulp::Arch::new().dispatch(self)
            }
        }
    };
}
pub(crate) use simd_kernel;

simd_kernel!(AddAssign<'a> { dst: &'a mut [f32], src: &'a [f32] } => {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
});

/// `dst += src`.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    AddAssign { dst, src }.run()
}
