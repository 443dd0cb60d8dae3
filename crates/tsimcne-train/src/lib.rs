//! The training core of t-SimCNE: the contrastive losses ([`loss`]), SGD
//! with momentum and saveable state ([`sgd`]), the learning-rate schedule
//! ([`schedule`]), the checkpointed training loop ([`trainer`]) with its
//! positive partners ([`positives`]) and its resume state ([`checkpoint`]), and the
//! stages built on it ([`stage`]; `project`'s PCA start in `pca`), the
//! model directories they read ([`model_dir`]), `embed` ([`embed`]), and
//! how long they will take here ([`estimate`]).

pub mod checkpoint;
pub mod embed;
mod error;
pub mod estimate;
pub mod loss;
pub mod model_dir;
mod pca;
pub mod positives;
pub mod schedule;
pub mod sgd;
pub mod stage;
pub mod trainer;

pub use checkpoint::EpochLog;
pub use error::{Result, TrainError};
pub use loss::{Contrastive, Similarity, fixed_scale, info_nce};
pub use schedule::{base_lr, lr_schedule};
pub use sgd::{GpuStep, Sgd, SgdConfig};
pub use trainer::{GpuPath, Images, Observer, Settings, Silent, train};
