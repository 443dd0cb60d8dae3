use std::path::PathBuf;

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] tsimcne_model::ModelError),
    #[error(transparent)]
    Format(#[from] tsimcne_format::FormatError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `at` is e.g. "epoch 3, step 17" or "the end of epoch 3".
    #[error("training diverged at {at}: {what}; the last good checkpoint is kept")]
    Diverged { at: String, what: String },
    #[error("{}: {detail}", path.display())]
    Checkpoint { path: PathBuf, detail: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
