use std::path::PathBuf;

use tsimcne_format::FormatError;

/// Why `prep` could not turn a source into an image table. Every variant
/// names the file it is about. A file that cannot be read, or a value that
/// is wrong, is [`FormatError`]'s `Io` or `Invalid` (one type for both).
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{}: truncated or corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("{}: size is {actual} bytes, the official file has {expected} (a custom file needs --no-verify)", path.display())]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{}: md5 is {actual}, the official file has {expected} (a custom file needs --no-verify)", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{}: magic number is {found:#010x}, expected {expected:#010x} ({what})", path.display())]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
        what: &'static str,
    },
    #[error("{}: header disagrees with the file: {detail}", path.display())]
    Header { path: PathBuf, detail: String },
    #[error("{}: missing {}", path.display(), missing.join(", "))]
    Missing { path: PathBuf, missing: Vec<String> },
    #[error("{}: refusing archive member {member:?}: {why}", path.display())]
    BadMember {
        path: PathBuf,
        member: String,
        why: &'static str,
    },
    #[error("{}: unreadable image: {detail}", path.display())]
    Image { path: PathBuf, detail: String },
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
}

impl PrepError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Format(FormatError::io(path, source))
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format(FormatError::invalid(path, message))
    }

    /// The detail often quotes bytes of the bad file (tar's errors quote
    /// header fields): control characters are escaped, so the message stays
    /// one line, and it is cut after 200 characters.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> Self {
        const MAX: usize = 200;
        let mut clean: String = detail
            .to_string()
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        if let Some((cut, _)) = clean.char_indices().nth(MAX) {
            clean.truncate(cut);
            clean.push('…');
        }
        Self::Corrupt {
            path: path.into(),
            detail: clean,
        }
    }
}

pub type Result<T, E = PrepError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_details_are_one_short_line() {
        let quoted = format!(
            "numeric field was not a number: ne_50\nfi{}",
            "x".repeat(500)
        );
        let e = PrepError::corrupt("a.tar", quoted).to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with(
                "a.tar: truncated or corrupt: numeric field was not a number: ne_50\\nfi"
            ),
            "{e}"
        );
        assert!(e.ends_with('…') && e.chars().count() < 250, "{e}");
    }
}
