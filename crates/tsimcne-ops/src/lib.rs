//! CPU kernels for training the ResNet fast: convolution on channels-last
//! (NHWC) activations as im2col/col2im plus one `gemm` per block of pixels,
//! and batch normalisation with the block's ReLU and residual addition fused
//! in, forward and backward; the projection head's fully connected layers
//! ([`linear`]) and the contrastive loss with its gradient ([`contrastive`]).
//!
//! The kernels work on plain slices and know nothing of candle; the model
//! crate strings them into the backbone's forward and backward passes.
//! Every kernel splits its work into blocks fixed by the shape, so the result
//! is bit-identical for any thread count (rayon's global pool runs them).
//!
//! **Invariant:** the only `unsafe` is the bounds-checked `gemm` call in
//! [`gemm`].

pub mod bn;
pub mod contrastive;
pub mod conv;
pub mod gemm;
pub mod linear;
pub mod pool;
mod simd;
pub mod stats;

pub use bn::{
    BnParamGrads, BnStats, bn_eval_forward, bn_stats, bn_train_backward, bn_train_forward,
};
pub use contrastive::{FixedScale, fixed_scale_backward, fixed_scale_forward, info_nce_cauchy};
pub use conv::{
    ConvGeom, conv_backward_data, conv_backward_weight, conv_forward, patch_major_to_weight,
    weight_to_patch_major,
};
pub use linear::{LinearGeom, linear_backward_data, linear_backward_params, linear_forward};
pub use pool::{global_avg_pool, global_avg_pool_backward, nchw_to_nhwc};
pub use stats::column_means;
