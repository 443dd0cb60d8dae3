use std::path::PathBuf;

/// Why a model could not be built, loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Format(#[from] tsimcne_format::FormatError),
    #[error("{}: not a readable safetensors file: {detail}", path.display())]
    Unreadable { path: PathBuf, detail: String },
    #[error("{}: {detail}", path.display())]
    Mismatch { path: PathBuf, detail: String },
    #[error("unknown preset {0:?} (known: resnet18, small, tiny)")]
    UnknownPreset(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
