//! Keeps a panic of the Parquet reader on corrupt input from becoming a
//! crash: the reader (a dependency) still has a few `assert!`s and unchecked
//! arithmetic on values read from the file (found by `fuzz/`, e.g. a
//! division by a page's zero value count). Calls into it run under
//! [`decoding`], which turns such a panic into a [`FormatError`] naming the
//! file; the panic message is not printed.
//!
//! **Invariant:** only panics raised inside [`decoding`] on this thread are
//! silenced; every other panic reaches the hook that was installed before
//! (the default one, or a fuzzer's).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use crate::error::{FormatError, Result};

thread_local! {
    /// How many [`decoding`] calls this thread is inside.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, a call into the Parquet reader for the file at `path`; a
/// panic inside it becomes an error.
pub(crate) fn decoding<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    r.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(FormatError::invalid(
            path,
            format!("corrupt parquet data: the reader failed ({why})"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_an_error_and_outside_still_panics() {
        let p = Path::new("x.parquet");
        let e = decoding::<()>(p, || panic!("attempt to divide by zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "x.parquet: corrupt parquet data: the reader failed (attempt to divide by zero)"
        );
        assert_eq!(decoding(p, || Ok(3)).unwrap(), 3);
        assert!(catch_unwind(|| panic!("outside")).is_err());
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}
