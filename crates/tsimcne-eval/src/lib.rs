//! Evaluation of t-SimCNE maps.
//!
//! Exact k-nearest neighbours ([`knn`]: a k-d tree for maps, pruned brute
//! force for high dimensions), kNN accuracy under the paper's protocols and
//! neighbour preservation against high-dimensional references
//! ([`evaluate()`]), and the `evaluate` stage that writes them and draws
//! the map ([`stage`]).

mod brute;
mod error;
mod evaluate;
mod kdtree;
pub mod knn;
mod matmul;
pub mod split;
pub mod stage;
mod topk;

pub use brute::Data;
pub use error::{EvalError, Result};
pub use evaluate::{
    Accuracy, EvalConfig, Evaluation, Holdout, Metrics, Reference, ReferenceSource, evaluate,
    read_aligned, summary,
};
