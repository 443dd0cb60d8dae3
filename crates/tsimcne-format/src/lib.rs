//! The wire formats of the t-SimCNE pipeline.
//!
//! The stage binaries talk only through files; this crate owns every one of
//! them, so a format changes in exactly one place. It has no candle
//! dependency: anything that reads or writes the files can use it.
//!
//! # The image table (Parquet), written by `prep`
//!
//! One row per image. Format version [`IMAGE_TABLE_VERSION`].
//!
//! | column | Arrow type | null | meaning |
//! |---|---|---|---|
//! | `id` | UInt32 | no | `0..N` in row order; the join key in every other table |
//! | `split` | Utf8 | no | `"train"` or `"test"` (the dataset's official split) |
//! | `label` | Int32 | yes | class index into `tsimcne.class_names` |
//! | `label_name` | Dictionary(Int32, Utf8) | yes | the class name (a pandas categorical) |
//! | `coarse_label` | Int32 | yes | CIFAR-100 only: superclass index |
//! | `coarse_label_name` | Dictionary(Int32, Utf8) | yes | CIFAR-100 only: superclass name |
//! | `image` | Binary | no | raw u8 pixels, HWC, row-major: `height·width·channels` bytes |
//!
//! Parquet key-value metadata (all values are strings):
//!
//! | key | value |
//! |---|---|
//! | `tsimcne.kind` | `images` |
//! | `tsimcne.format_version` | `1`; a reader refuses a newer version |
//! | `tsimcne.height`, `tsimcne.width`, `tsimcne.channels` | decimal; channels is 1 or 3 |
//! | `tsimcne.class_names` | JSON list of class names in label order (`[]` if unlabelled) |
//! | `tsimcne.coarse_class_names` | CIFAR-100 only: JSON list of the 20 superclass names |
//! | `tsimcne.source` | `cifar10`, `cifar100`, `mnist`, `fashion-mnist` or `folder` |
//! | `tsimcne.source_checksum` | `md5:<hex>` of the source archive, or of the files' checksums |
//! | `tsimcne.subset` | present after `--limit`: JSON `{"limit":N,"seed":S,"of":M}` |
//!
//! Row groups hold about [`image_table::ROW_GROUP_TARGET_BYTES`] of pixels, so
//! [`ImageTableReader`] streams a table one group at a time. Pages are zstd
//! (level 1) compressed. Check a file from Python with
//! `python3 tests/read_with_pyarrow.py FILE`.
//!
//! # Model tensors (safetensors)
//!
//! Tensor names follow the reference PyTorch `state_dict`; see
//! [`model_keys`] for the convention and [`model_keys::tensor_specs`] for the
//! full list with shapes. Conv weights are `[out, in, kh, kw]`, Linear weights
//! `[out, in]`, BatchNorm `num_batches_tracked` is an I64 scalar.
//!
//! # Writing
//!
//! Every output goes through [`atomic::write_atomic`]: a temporary file beside
//! the target, fsync, rename, fsync of the directory.

pub mod atomic;
mod error;
pub mod image_table;
pub mod model_keys;

pub use error::{FormatError, Result};
pub use image_table::{
    IMAGE_TABLE_VERSION, ImageBatch, ImageMeta, ImageSet, ImageTableReader, Split, Subset,
    read_image_table, write_image_table,
};
