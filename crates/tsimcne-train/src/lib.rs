//! The training core of t-SimCNE: the contrastive losses ([`loss`]), SGD
//! with momentum and saveable state ([`sgd`]), and the learning-rate
//! schedule ([`schedule`]).

pub mod loss;
pub mod schedule;
pub mod sgd;

pub use loss::{Similarity, info_nce};
pub use schedule::{base_lr, lr_schedule};
pub use sgd::{Sgd, SgdConfig};
