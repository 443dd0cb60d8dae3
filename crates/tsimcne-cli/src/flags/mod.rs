//! What a user types: every stage's flags, each with its help and default
//! written once, and their lowering into the library's config, built and
//! checked once here (ripgrep's low-level → high-level arguments). The
//! stages in [`crate::stages`] only parse, call the library and report.

pub mod embed;
pub mod estimate;
pub mod evaluate;
pub mod explore;
pub mod prep;
pub mod pretrain;
pub mod train;
pub mod two_d;
