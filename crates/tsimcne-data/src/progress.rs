//! Progress reporting. The library only counts; a binary decides how (and
//! whether) to draw it.

/// Receives progress from long-running work. Implementations must be cheap:
/// `advance` is called from worker threads, once per item or chunk.
pub trait Progress: Sync {
    /// A new phase begins; `total` is its number of units if known.
    fn begin(&self, phase: &str, total: Option<u64>, unit: Unit);
    fn advance(&self, n: u64);
    fn end(&self);
}

/// What a phase counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Images,
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
