//! Tables of vectors keyed by image id: the features `pretrain` writes
//! (`backbone`, `head`) and the embeddings of the 2-D stages.
//!
//! **Invariant:** `id` matches the image table's ids; each vector column is a
//! FixedSizeList<Float32> of one width.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::atomic::write_atomic;
use crate::error::{FormatError, Result};

/// `tsimcne.kind` of a features table.
pub const KIND_FEATURES: &str = "features";
pub const FEATURES_VERSION: u32 = 1;

/// One named vector column: `dim` floats per row, row-major.
#[derive(Clone, Debug)]
pub struct VectorColumn<'a> {
    pub name: &'a str,
    pub dim: usize,
    pub values: &'a [f32],
}

/// Writes `id` plus the vector columns to `path` atomically, with `kind`
/// and any extra key-value metadata.
pub fn write_vectors(
    path: &Path,
    kind: &str,
    ids: &[u32],
    columns: &[VectorColumn<'_>],
    extra: &[(String, String)],
) -> Result<()> {
    let n = ids.len();
    let mut fields = vec![Field::new("id", DataType::UInt32, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(ids.to_vec()))];
    for c in columns {
        if c.values.len() != n * c.dim {
            return Err(FormatError::invalid(
                path,
                format!(
                    "column {} has {} values for {n} rows of {}",
                    c.name,
                    c.values.len(),
                    c.dim
                ),
            ));
        }
        let (field, array) = vector_column(path, c.name, c.dim, c.values)?;
        fields.push(field);
        arrays.push(array);
    }
    write_table(path, kind, fields, arrays, extra)
}

/// A non-null FixedSizeList<Float32> column of `dim` floats per row.
fn vector_column(path: &Path, name: &str, dim: usize, values: &[f32]) -> Result<(Field, ArrayRef)> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let d = i32::try_from(dim).map_err(|_| FormatError::invalid(path, "vector too wide"))?;
    let list = FixedSizeListArray::try_new(
        item.clone(),
        d,
        Arc::new(Float32Array::from(values.to_vec())),
        None,
    )
    .map_err(|source| FormatError::Arrow {
        path: path.into(),
        source,
    })?;
    Ok((
        Field::new(name, DataType::FixedSizeList(item, d), false),
        Arc::new(list),
    ))
}

/// Writes one record batch with the kind, the version and `extra` in the
/// Parquet footer and the Arrow schema, atomically.
fn write_table(
    path: &Path,
    kind: &str,
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
    extra: &[(String, String)],
) -> Result<()> {
    let mut kv: Vec<(String, String)> = vec![
        ("tsimcne.kind".into(), kind.into()),
        (
            "tsimcne.format_version".into(),
            FEATURES_VERSION.to_string(),
        ),
    ];
    kv.extend(extra.iter().cloned());
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        kv.iter().cloned().collect::<HashMap<_, _>>(),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), arrays).map_err(|source| FormatError::Arrow {
            path: path.into(),
            source,
        })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_key_value_metadata(Some(
            kv.into_iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v))
                .collect(),
        ))
        .build();
    write_atomic(path, |out| {
        let perr = |source| FormatError::Parquet {
            path: path.into(),
            source,
        };
        let mut w = ArrowWriter::try_new(out, schema, Some(props)).map_err(perr)?;
        w.write(&batch).map_err(perr)?;
        w.close().map_err(perr)?;
        Ok(())
    })
}

/// `tsimcne.kind` of an embedding table.
pub const KIND_EMBEDDING: &str = "embedding";
/// Coordinate column names of a map of up to three dimensions.
pub const COORDS: [&str; 3] = ["x", "y", "z"];

/// Writes an embedding table: `id`, `label` (Int32, nullable) and either one
/// Float32 column per coordinate (`x`, `y`, `z`) when `dim` ≤ 3, or one
/// FixedSizeList<Float32> column `embedding` for more dimensions.
pub fn write_embedding(
    path: &Path,
    ids: &[u32],
    labels: &[Option<i32>],
    dim: usize,
    coords: &[f32],
    extra: &[(String, String)],
) -> Result<()> {
    let n = ids.len();
    if labels.len() != n || coords.len() != n * dim || dim == 0 {
        return Err(FormatError::invalid(
            path,
            format!(
                "{n} ids, {} labels and {} coordinates of dimension {dim} disagree",
                labels.len(),
                coords.len()
            ),
        ));
    }
    let mut fields = vec![
        Field::new("id", DataType::UInt32, false),
        Field::new("label", DataType::Int32, true),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(ids.to_vec())),
        Arc::new(arrow::array::Int32Array::from(labels.to_vec())),
    ];
    if dim <= COORDS.len() {
        for (k, name) in COORDS.iter().take(dim).enumerate() {
            fields.push(Field::new(*name, DataType::Float32, false));
            arrays.push(Arc::new(Float32Array::from_iter_values(
                coords.iter().skip(k).step_by(dim).copied(),
            )));
        }
    } else {
        let (field, array) = vector_column(path, "embedding", dim, coords)?;
        fields.push(field);
        arrays.push(array);
    }
    write_table(path, KIND_EMBEDDING, fields, arrays, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn round_trip_through_arrow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.parquet");
        let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..6).map(|v| -(v as f32)).collect();
        let cols = [
            VectorColumn {
                name: "backbone",
                dim: 4,
                values: &a,
            },
            VectorColumn {
                name: "head",
                dim: 2,
                values: &b,
            },
        ];
        write_vectors(&p, KIND_FEATURES, &[0, 1, 2], &cols, &[]).unwrap();
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&p).unwrap()).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 3);
        let batch = r.build().unwrap().next().unwrap().unwrap();
        let list = batch
            .column_by_name("backbone")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let vals = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        assert_eq!(vals.values().to_vec(), a);
        assert!(write_vectors(&p, KIND_FEATURES, &[0], &cols, &[]).is_err());
    }
}
