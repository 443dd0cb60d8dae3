//! Tables of vectors keyed by image id: the features `pretrain` writes
//! (`backbone`, `head`) and the embeddings of the 2-D stages.
//!
//! **Invariant:** `id` matches the image table's ids; each vector column is a
//! FixedSizeList<Float32> of one width.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::atomic::write_atomic;
use crate::convert;
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
        let perr = |source| FormatError::parquet_write(path, source);
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
        Arc::new(arrow_array::Int32Array::from(labels.to_vec())),
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

/// A table of vectors read back: one row per id, `dim` floats per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    /// The column (or columns, joined by `,`) the vectors came from.
    pub column: String,
    pub ids: Vec<u32>,
    pub dim: usize,
    /// `ids.len() * dim` values, row-major.
    pub values: Vec<f32>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// Which column(s) of a table hold the vectors.
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    /// One list column (FixedSizeList, List or LargeList of floats).
    List(usize),
    /// Several scalar float columns, one per coordinate.
    Scalars(&'a [usize]),
}

/// The row offsets (from 0) and the values of a List or LargeList array.
fn list_parts<O: arrow_array::OffsetSizeTrait>(
    l: &arrow_array::GenericListArray<O>,
) -> (Vec<usize>, ArrayRef) {
    let o = l.value_offsets();
    let base = o[0].as_usize();
    let child = l.values().slice(base, o[o.len() - 1].as_usize() - base);
    (o.iter().map(|x| x.as_usize() - base).collect(), child)
}

/// Reads `id` plus a vector column from any Parquet table: ours (features,
/// embeddings) or one written by another tool.
///
/// With `column = None` the vectors are, in order of preference: the
/// coordinate columns `x`, `y`[, `z`]; the column `embedding`; the only
/// list column; all other float columns (except `id` and `label`) in table
/// order. A named column may be a list column or a scalar float column.
/// Float64 is narrowed to Float32; integer ids of any width are accepted.
/// Nulls, ragged lists and duplicate ids are errors.
pub fn read_vectors(path: &Path, column: Option<&str>) -> Result<Vectors> {
    crate::contain::decoding(path, || read_vectors_unguarded(path, column))
}

fn read_vectors_unguarded(path: &Path, column: Option<&str>) -> Result<Vectors> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let bad = |m: String| FormatError::invalid(path, m);
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let parquet_err = |source| FormatError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    crate::image_table::check_chunks(path, builder.metadata())?;
    let schema = builder.schema().clone();
    let fields = schema.fields();
    let is_float =
        |t: &DataType| matches!(t, DataType::Float32 | DataType::Float64 | DataType::Float16);
    let is_list = |t: &DataType| match t {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            is_float(f.data_type())
        }
        _ => false,
    };
    let index = |name: &str| fields.iter().position(|f| f.name() == name);
    let id_idx = index("id").ok_or_else(|| bad("no \"id\" column".into()))?;

    let scalars: Vec<usize>;
    let source = match column {
        Some(name) => {
            let i = index(name).ok_or_else(|| {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                bad(format!(
                    "no column {name:?} (columns: {})",
                    names.join(", ")
                ))
            })?;
            let t = fields[i].data_type();
            if is_list(t) {
                Source::List(i)
            } else if is_float(t) {
                scalars = vec![i];
                Source::Scalars(&scalars)
            } else {
                return Err(bad(format!(
                    "column {name:?} is {t}, not a float vector column"
                )));
            }
        }
        None => {
            let coords: Vec<usize> = COORDS.iter().map_while(|c| index(c)).collect();
            let lists: Vec<usize> = (0..fields.len())
                .filter(|&i| is_list(fields[i].data_type()))
                .collect();
            if coords.len() >= 2 && coords.iter().all(|&i| is_float(fields[i].data_type())) {
                scalars = coords;
                Source::Scalars(&scalars)
            } else if let Some(i) = index("embedding").filter(|&i| is_list(fields[i].data_type())) {
                Source::List(i)
            } else if lists.len() == 1 {
                Source::List(lists[0])
            } else if lists.len() > 1 {
                let names: Vec<&str> = lists.iter().map(|&i| fields[i].name().as_str()).collect();
                return Err(bad(format!(
                    "several vector columns ({}); name one",
                    names.join(", ")
                )));
            } else {
                scalars = (0..fields.len())
                    .filter(|&i| {
                        is_float(fields[i].data_type())
                            && !matches!(fields[i].name().as_str(), "id" | "label")
                    })
                    .collect();
                if scalars.is_empty() {
                    return Err(bad("no float vector column".into()));
                }
                Source::Scalars(&scalars)
            }
        }
    };
    let (roots, column_name): (Vec<usize>, String) = match source {
        Source::List(i) => (vec![id_idx, i], fields[i].name().clone()),
        Source::Scalars(cols) => (
            std::iter::once(id_idx)
                .chain(cols.iter().copied())
                .collect(),
            cols.iter()
                .map(|&i| fields[i].name().as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;

    let to_f32 = |a: &ArrayRef, what: &str| -> Result<Vec<f32>> {
        if a.null_count() > 0 {
            return Err(bad(format!("{what} has null values")));
        }
        convert::floats(a.as_ref()).ok_or_else(|| bad(format!("{what} is not a float column")))
    };

    let mut ids: Vec<u32> = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut dim: Option<usize> = None;
    for batch in reader {
        let batch = batch.map_err(|source| FormatError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        let id = batch.column_by_name("id").expect("projected");
        if id.null_count() > 0 {
            return Err(bad("column \"id\" has null values".into()));
        }
        let id = convert::integers(id.as_ref())
            .ok_or_else(|| bad(format!("column \"id\" is {}, not integers", id.data_type())))?;
        for v in id.into_iter().flatten() {
            let v = u32::try_from(v).map_err(|_| bad(format!("id {v} is out of range")))?;
            ids.push(v);
        }
        match source {
            Source::List(i) => {
                let name = fields[i].name();
                let a = batch.column_by_name(name).expect("projected");
                if a.null_count() > 0 {
                    return Err(bad(format!("column {name:?} has null rows")));
                }
                let (offsets, child): (Vec<usize>, ArrayRef) = match a.data_type() {
                    DataType::FixedSizeList(_, w) => {
                        let l = a.as_fixed_size_list();
                        let w = *w as usize;
                        let start = l.offset() * w;
                        let child = l.values().slice(start, l.len() * w);
                        ((0..=l.len()).map(|r| r * w).collect(), child)
                    }
                    DataType::List(_) => list_parts(a.as_list::<i32>()),
                    _ => list_parts(a.as_list::<i64>()),
                };
                for w in offsets.windows(2) {
                    let len = w[1] - w[0];
                    match dim {
                        None => dim = Some(len),
                        Some(d) if d != len => {
                            return Err(bad(format!(
                                "column {name:?} has rows of length {d} and {len}"
                            )));
                        }
                        _ => {}
                    }
                }
                values.extend(to_f32(&child, &format!("column {name:?}"))?);
            }
            Source::Scalars(cols) => {
                dim = Some(cols.len());
                let cols: Vec<Vec<f32>> = cols
                    .iter()
                    .map(|&i| {
                        let name = fields[i].name();
                        to_f32(
                            batch.column_by_name(name).expect("projected"),
                            &format!("column {name:?}"),
                        )
                    })
                    .collect::<Result<_>>()?;
                for r in 0..batch.num_rows() {
                    values.extend(cols.iter().map(|c| c[r]));
                }
            }
        }
    }
    let dim = dim.unwrap_or(match source {
        Source::List(_) => 0,
        Source::Scalars(c) => c.len(),
    });
    if dim == 0 && !ids.is_empty() {
        return Err(bad(format!("column {column_name:?} has empty vectors")));
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("id {} appears more than once", w[0])));
    }
    Ok(Vectors {
        column: column_name,
        ids,
        dim,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// A 4-D `backbone` and a 2-D `head` column of 3 rows.
    fn sample_columns() -> (Vec<f32>, Vec<f32>) {
        let a = (0..12).map(|v| v as f32).collect();
        let b = (0..6).map(|v| -(v as f32)).collect();
        (a, b)
    }

    fn columns<'a>(a: &'a [f32], b: &'a [f32]) -> [VectorColumn<'a>; 2] {
        [
            VectorColumn {
                name: "backbone",
                dim: 4,
                values: a,
            },
            VectorColumn {
                name: "head",
                dim: 2,
                values: b,
            },
        ]
    }

    #[test]
    fn round_trip_through_arrow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.parquet");
        let (a, b) = sample_columns();
        let cols = columns(&a, &b);
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

    #[test]
    fn read_vectors_finds_our_columns_and_other_tools() {
        let dir = tempfile::tempdir().unwrap();
        // Ours: features with two list columns (must be named), embeddings x/y.
        let p = dir.path().join("f.parquet");
        let (a, b) = sample_columns();
        let cols = columns(&a, &b);
        write_vectors(&p, KIND_FEATURES, &[5, 3, 1], &cols, &[]).unwrap();
        let v = read_vectors(&p, Some("backbone")).unwrap();
        assert_eq!(
            (v.ids.clone(), v.dim, v.values.clone()),
            (vec![5, 3, 1], 4, a.clone())
        );
        assert_eq!(v.row(1), &a[4..8]);
        assert_eq!(read_vectors(&p, Some("head")).unwrap().values, b);
        let e = read_vectors(&p, None).unwrap_err().to_string();
        assert!(e.contains("several vector columns (backbone, head)"), "{e}");
        let e = read_vectors(&p, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("no column \"nope\" (columns: id, backbone, head)"),
            "{e}"
        );

        let p = dir.path().join("e.parquet");
        write_embedding(&p, &[0, 1], &[Some(1), None], 2, &[0.5, 1.5, 2.5, 3.5], &[]).unwrap();
        let v = read_vectors(&p, None).unwrap();
        assert_eq!(
            (v.column.as_str(), v.dim, v.values),
            ("x,y", 2, vec![0.5, 1.5, 2.5, 3.5])
        );

        // Another tool: int64 ids, float64 columns named freely.
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Float64, true),
            Field::new("tsne1", DataType::Float64, false),
            Field::new("tsne2", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![0, 1])),
                Arc::new(arrow_array::Float64Array::from(vec![Some(1.0), None])),
                Arc::new(arrow_array::Float64Array::from(vec![1.0, 2.0])),
                Arc::new(arrow_array::Float64Array::from(vec![3.0, 4.0])),
            ],
        )
        .unwrap();
        let p = dir.path().join("t.parquet");
        let mut w = ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let v = read_vectors(&p, None).unwrap();
        assert_eq!(
            (v.column.as_str(), v.values),
            ("tsne1,tsne2", vec![1.0, 3.0, 2.0, 4.0])
        );
        assert_eq!(
            read_vectors(&p, Some("tsne2")).unwrap().values,
            vec![3.0, 4.0]
        );
    }

    #[test]
    fn read_vectors_takes_list_columns_and_refuses_ragged_ones() {
        use arrow_array::types::Float64Type;
        use arrow_array::{Array, ListArray};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: Vec<Option<Vec<Option<f64>>>>| {
            let list = ListArray::from_iter_primitive::<Float64Type, _, _>(rows);
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::UInt32, false),
                Field::new("umap", list.data_type().clone(), true),
            ]));
            let n = list.len() as u32;
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt32Array::from((0..n).collect::<Vec<_>>())),
                    Arc::new(list),
                ],
            )
            .unwrap();
            let p = dir.path().join(name);
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            p
        };
        let p = write(
            "l.parquet",
            vec![
                Some(vec![Some(1.0), Some(2.0)]),
                Some(vec![Some(3.0), Some(4.5)]),
            ],
        );
        let v = read_vectors(&p, None).unwrap();
        assert_eq!(
            (v.column.as_str(), v.dim, v.values),
            ("umap", 2, vec![1.0, 2.0, 3.0, 4.5])
        );
        let p = write(
            "r.parquet",
            vec![Some(vec![Some(1.0), Some(2.0)]), Some(vec![Some(3.0)])],
        );
        let e = read_vectors(&p, None).unwrap_err().to_string();
        assert!(e.contains("rows of length 2 and 1"), "{e}");
    }

    #[test]
    fn read_vectors_refuses_bad_tables() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, fields: Vec<Field>, arrays: Vec<ArrayRef>| {
            let schema = Arc::new(Schema::new(fields));
            let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
            let p = dir.path().join(name);
            let mut w =
                ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            p
        };
        let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
        let ids = |v: Vec<u32>| Arc::new(UInt32Array::from(v)) as ArrayRef;
        let floats = |v: Vec<Option<f32>>| Arc::new(Float32Array::from(v)) as ArrayRef;
        let cases = [
            (
                write(
                    "noid.parquet",
                    vec![f("x", DataType::Float32, false)],
                    vec![floats(vec![Some(1.0)])],
                ),
                "no \"id\" column",
            ),
            (
                write(
                    "dup.parquet",
                    vec![
                        f("id", DataType::UInt32, false),
                        f("x", DataType::Float32, false),
                    ],
                    vec![ids(vec![1, 1]), floats(vec![Some(1.0), Some(2.0)])],
                ),
                "id 1 appears more than once",
            ),
            (
                write(
                    "null.parquet",
                    vec![
                        f("id", DataType::UInt32, false),
                        f("x", DataType::Float32, true),
                    ],
                    vec![ids(vec![0, 1]), floats(vec![Some(1.0), None])],
                ),
                "column \"x\" has null values",
            ),
            (
                write(
                    "nofloat.parquet",
                    vec![
                        f("id", DataType::UInt32, false),
                        f("label", DataType::Float32, false),
                    ],
                    vec![ids(vec![0]), floats(vec![Some(1.0)])],
                ),
                "no float vector column",
            ),
        ];
        for (p, want) in cases {
            let e = read_vectors(&p, None).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(p.to_str().unwrap()), "{e}");
        }
        let p = dir.path().join("nofile.parquet");
        assert!(read_vectors(&p, None).is_err());
    }
}
