#![doc = include_str!("../FORMATS.md")]

pub mod atomic;
mod contain;
mod convert;
mod error;
pub mod image_table;
pub mod model_config;
pub mod model_keys;
pub mod vectors;

pub use error::{FormatError, Result};
pub use image_table::{
    IMAGE_TABLE_VERSION, ImageBatch, ImageMeta, ImageSet, ImageTableReader, SourcePath, Split,
    Subset, read_image_table, write_image_table,
};

#[cfg(test)]
mod tests {
    /// The format documentation names every column, metadata key and tensor
    /// pattern the code uses, so the two cannot drift apart silently.
    #[test]
    fn formats_doc_names_every_key() {
        use crate::image_table::{column, meta_key};
        let doc = include_str!("../FORMATS.md");
        let names = [
            column::ID,
            column::SPLIT,
            column::LABEL,
            column::LABEL_NAME,
            column::COARSE_LABEL,
            column::COARSE_LABEL_NAME,
            column::IMAGE,
            column::PATH,
            column::PATH_BYTES,
            meta_key::KIND,
            meta_key::FORMAT_VERSION,
            meta_key::HEIGHT,
            meta_key::WIDTH,
            meta_key::CHANNELS,
            meta_key::CLASS_NAMES,
            meta_key::COARSE_CLASS_NAMES,
            meta_key::SOURCE,
            meta_key::SOURCE_CHECKSUM,
            meta_key::SUBSET,
            crate::model_keys::BACKBONE,
            crate::model_keys::HEAD,
        ];
        for n in names {
            assert!(
                doc.contains(&format!("`{n}")),
                "FORMATS.md does not document {n}"
            );
        }
    }
}
