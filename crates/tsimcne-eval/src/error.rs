/// Why an evaluation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Format(#[from] tsimcne_format::FormatError),
    /// Inputs that are readable but do not fit together; the message names
    /// the files.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
