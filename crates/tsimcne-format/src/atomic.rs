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

/// Checks that `path` can be created: its directory exists, `path` is not a
/// directory, and a file can be created beside it (a read-only or full
/// directory fails here, not after hours of work). Call it before long work
/// so a typo fails fast.
pub fn check_output_path(path: &Path) -> Result<()> {
    check_target(path)?;
    let probe = temp_path(path);
    File::create(&probe).map_err(|e| cannot_write(path, e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// The checks of [`check_output_path`] that create nothing.
fn check_target(path: &Path) -> Result<()> {
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

/// Checks that files can be created in `dir` (which must exist).
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".tsimcne-probe.tmp.{}", std::process::id()));
    File::create(&probe).map_err(|e| cannot_write(dir, e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// The error of a file that cannot be created: the final name, not the
/// temporary one, so the message names what the user asked for.
fn cannot_write(path: &Path, e: std::io::Error) -> FormatError {
    FormatError::Invalid {
        path: path.into(),
        message: format!("cannot write: {e}"),
    }
}

/// The process id in a temporary name `.NAME.tmp.PID`, if `file` is one of
/// `name`'s (`name` `None`: of any file).
fn temp_pid(file: &str, name: Option<&str>) -> Option<u32> {
    let rest = file.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once(".tmp.")?;
    if name.is_some_and(|n| n != stem) || stem.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is alive on this machine. Without `/proc` it is
/// assumed alive, so nothing is removed.
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes the temporaries that killed writers left in `dir`: files named
/// `.NAME.tmp.PID` (of `name` only, if given) whose process is gone.
/// Returns how many were removed. A temporary never has a final name, so
/// removing it loses nothing; a live writer's is left alone.
pub fn remove_stale_temps(dir: &Path, name: Option<&str>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = temp_pid(&file.to_string_lossy(), name) else {
            continue;
        };
        if !alive(pid)
            && e.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// An exclusive lock on an output directory, held by the one run that
/// writes it; released when dropped, and by the OS when the process dies
/// (kill -9 included), so a lock never outlives its run.
#[derive(Debug)]
pub struct DirLock {
    /// The open directory holding the `flock`; `None` where the file system
    /// cannot lock.
    _dir: Option<File>,
}

/// Locks `dir` (which must exist) for one writer: an advisory `flock` on the
/// directory itself, so nothing is added to the directory. A second run on
/// the same directory gets an error naming it, instead of racing the first
/// for its checkpoint and outputs. Where directories cannot be opened or
/// locked (Windows, some network file systems), the run goes on unlocked,
/// as before.
///
/// **Invariant:** while one process holds a directory's lock, no other
/// process writes a checkpoint or output into that directory.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let Ok(file) = File::open(dir) else {
        return Ok(DirLock { _dir: None });
    };
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _dir: Some(file) }),
        Err(fs::TryLockError::WouldBlock) => Err(FormatError::invalid(
            dir,
            "another run is writing this directory; wait for it to end or choose another output directory",
        )),
        Err(fs::TryLockError::Error(_)) => Ok(DirLock { _dir: None }),
    }
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
    check_target(path)?;
    let dir = parent_dir(path);
    if let Some(name) = path.file_name() {
        remove_stale_temps(dir, Some(&name.to_string_lossy()));
    }
    let tmp = temp_path(path);
    let file = File::create(&tmp).map_err(|e| cannot_write(path, e))?;
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
    sync_dir(dir);
    Ok(value)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |out| {
        out.write_all(bytes).map_err(|e| FormatError::io(path, e))
    })
}

/// Removes `path` durably (the removal is synced like a rename), if it
/// exists.
pub fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_dir(path));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FormatError::io(path, e)),
    }
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

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        // Above Linux's largest pid_max, so no such process exists.
        let dead = dir.path().join(".a.bin.tmp.4194305");
        let other = dir.path().join(".b.bin.tmp.4194305");
        // Process 1 is always alive.
        let live = dir.path().join(".a.bin.tmp.1");
        for f in [&dead, &other, &live] {
            fs::write(f, b"half").unwrap();
        }
        write_bytes_atomic(&p, b"whole").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"whole");
        if Path::new("/proc/self").exists() {
            assert!(
                !dead.exists(),
                "the dead writer's temporary of a.bin is removed"
            );
        }
        assert!(other.exists(), "only a.bin's temporaries are touched");
        assert!(live.exists(), "a live writer's temporary is kept");
        fs::remove_file(&live).unwrap();
        assert_eq!(
            remove_stale_temps(dir.path(), None),
            usize::from(Path::new("/proc/self").exists())
        );
        assert_eq!(temp_pid(".a.bin.tmp.12", Some("a.bin")), Some(12));
        assert_eq!(temp_pid(".a.bin.tmp.12", Some("b.bin")), None);
        assert_eq!(temp_pid("a.bin.tmp.12", None), None);
        assert_eq!(temp_pid(".a.bin.tmp.x", None), None);
    }

    #[test]
    fn unwritable_target_names_the_final_path() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: creation fails
        // for every user, root included.
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, b"x").unwrap();
        let p = blocker.join("a.bin");
        let err = check_output_path(&p).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = check_writable_dir(&blocker).unwrap_err().to_string();
        assert!(
            err.contains("blocker") && err.contains("cannot write"),
            "{err}"
        );
    }

    #[test]
    fn a_locked_directory_refuses_a_second_writer_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        // flock belongs to the open file, so a second open in the same
        // process conflicts as another process's would.
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&*dir.path().to_string_lossy()) && err.contains("another run"),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the lock adds no file"
        );
        drop(first);
        let _again = lock_dir(dir.path()).unwrap();
    }
}
