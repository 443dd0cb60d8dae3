//! Helpers shared by the training tests (golden.rs, cuda.rs).

use candle_core::{DType, Tensor};

/// All of `t`'s values, flattened, as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}
