//! Crash-safe output files: write a temporary file beside the target, fsync
//! it, rename it over the target, then fsync the directory.
//!
//! **Invariant:** a file under its final name is always complete. A failed or
//! interrupted write leaves any earlier file of that name untouched.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};

/// Removes the temporary file unless the write was committed, so an error or a
/// panic inside the writer never leaves debris behind.
struct TempGuard {
    path: PathBuf,
    committed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The temporary name used while `path` is being written: hidden, in the same
/// directory (so the rename is atomic) and unique to this process.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Checks that `path` can be created: its directory exists and `path` is not a
/// directory. Call it before long work so a typo fails fast.
pub fn check_output_path(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(FormatError::invalid(
            path,
            format!("output directory {} does not exist", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(FormatError::invalid(path, "output path is a directory"));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `path` atomically. `write` fills a buffered temporary file; only when
/// it returns `Ok` is the file synced and renamed into place.
pub fn write_atomic<T, E>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<FormatError>,
{
    check_output_path(path)?;
    let tmp = temp_path(path);
    let file = File::create(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    let mut guard = TempGuard {
        path: tmp.clone(),
        committed: false,
    };
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let value = write(&mut out)?;
    out.flush().map_err(|e| FormatError::io(path, e))?;
    let file = out
        .into_inner()
        .map_err(|e| FormatError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| FormatError::io(path, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
    guard.committed = true;
    sync_dir(parent_dir(path));
    Ok(value)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |out| {
        out.write_all(bytes).map_err(|e| FormatError::io(path, e))
    })
}

/// Makes a rename durable. Best effort: some filesystems refuse to open or
/// sync a directory, and the rename itself has already happened.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes_atomic(&p, b"one").unwrap();
        write_bytes_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes_atomic(&p, b"good").unwrap();
        let r: Result<()> = write_atomic(&p, |out| {
            out.write_all(b"half").unwrap();
            Err(FormatError::invalid(&p, "boom"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"good");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/a.bin");
        let err = write_bytes_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }
}
