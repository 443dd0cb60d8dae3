use std::path::PathBuf;

/// Everything that can go wrong reading or writing one of the pipeline's files.
///
/// Every variant names the file, so a binary can print the error on one line
/// (`{err:#}` with anyhow) without adding its own context.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a readable parquet file", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{}: writing parquet", path.display())]
    ParquetWrite {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{}: bad arrow data", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl FormatError {
    /// [`FormatError::Io`] of `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An error of the Parquet writer: a file-system error (a full disk)
    /// becomes [`FormatError::Io`], so the message is the OS's own.
    pub(crate) fn parquet_write(
        path: &std::path::Path,
        source: parquet::errors::ParquetError,
    ) -> Self {
        match source {
            parquet::errors::ParquetError::External(e) => match e.downcast::<std::io::Error>() {
                Ok(io) => Self::io(path, *io),
                Err(e) => Self::ParquetWrite {
                    path: path.into(),
                    source: parquet::errors::ParquetError::External(e),
                },
            },
            source => Self::ParquetWrite {
                path: path.into(),
                source,
            },
        }
    }

    /// [`FormatError::Invalid`] of `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
