//! The image table: one row per image, the contract between `prep` and every
//! later stage. See the crate docs for the wire-format table.
//!
//! **Invariant:** `id` is `0..N` in row order, so a row's id is its index.
//! **Invariant:** every `image` cell holds exactly `height * width * channels`
//! bytes, HWC, row-major.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, DictionaryArray, Int32Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::convert;
use crate::error::{FormatError, Result};

/// The newest image-table format this build reads and the one it writes.
pub const IMAGE_TABLE_VERSION: u32 = 1;

/// The value of [`meta_key::KIND`] in an image table.
pub const KIND_IMAGES: &str = "images";

/// Row groups hold about this many bytes of pixels, so a reader can stream the
/// table one group at a time.
pub const ROW_GROUP_TARGET_BYTES: usize = 8 << 20;

/// Column names.
pub mod column {
    pub const ID: &str = "id";
    pub const SPLIT: &str = "split";
    pub const LABEL: &str = "label";
    pub const LABEL_NAME: &str = "label_name";
    pub const COARSE_LABEL: &str = "coarse_label";
    pub const COARSE_LABEL_NAME: &str = "coarse_label_name";
    pub const IMAGE: &str = "image";
    pub const PATH: &str = "path";
    pub const PATH_BYTES: &str = "path_bytes";
}

/// Keys of the Parquet key-value metadata. Every value is a string; numbers
/// are decimal, lists are JSON.
pub mod meta_key {
    pub const KIND: &str = "tsimcne.kind";
    pub const FORMAT_VERSION: &str = "tsimcne.format_version";
    pub const HEIGHT: &str = "tsimcne.height";
    pub const WIDTH: &str = "tsimcne.width";
    pub const CHANNELS: &str = "tsimcne.channels";
    pub const CLASS_NAMES: &str = "tsimcne.class_names";
    pub const COARSE_CLASS_NAMES: &str = "tsimcne.coarse_class_names";
    pub const SOURCE: &str = "tsimcne.source";
    pub const SOURCE_CHECKSUM: &str = "tsimcne.source_checksum";
    pub const SUBSET: &str = "tsimcne.subset";
}

/// The official split an image belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

/// How a table was cut down from its source by `prep --limit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// Rows kept.
    pub limit: usize,
    /// Seed of the stratified draw.
    pub seed: u64,
    /// Rows in the source.
    pub of: usize,
}

/// Table-level facts, stored in the Parquet key-value metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMeta {
    pub height: u32,
    pub width: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Class names in label order; empty for an unlabelled table.
    pub class_names: Vec<String>,
    /// CIFAR-100's 20 superclasses, in coarse-label order.
    pub coarse_class_names: Option<Vec<String>>,
    /// What `prep` read: `cifar10`, `cifar100`, `mnist`, `fashion-mnist`, `folder`.
    pub source: String,
    /// `md5:<hex>` of the source (for several files: of their checksums).
    pub source_checksum: String,
    pub subset: Option<Subset>,
}

impl ImageMeta {
    /// The facts of a table read from an image folder (`source` `folder`):
    /// no coarse classes, no subset.
    pub fn folder(
        (height, width, channels): (u32, u32, u32),
        class_names: Vec<String>,
        source_checksum: String,
    ) -> Self {
        Self {
            height,
            width,
            channels,
            class_names,
            coarse_class_names: None,
            source: "folder".into(),
            source_checksum,
            subset: None,
        }
    }

    /// Bytes in one image.
    pub fn image_len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }

    pub fn has_coarse(&self) -> bool {
        self.coarse_class_names.is_some()
    }

    /// The key-value pairs written into the Parquet footer.
    pub fn to_key_values(&self) -> Vec<(String, String)> {
        let json = |v: &[String]| serde_json::to_string(v).expect("string lists serialise");
        let mut kv = vec![
            (meta_key::KIND, KIND_IMAGES.to_string()),
            (meta_key::FORMAT_VERSION, IMAGE_TABLE_VERSION.to_string()),
            (meta_key::HEIGHT, self.height.to_string()),
            (meta_key::WIDTH, self.width.to_string()),
            (meta_key::CHANNELS, self.channels.to_string()),
            (meta_key::CLASS_NAMES, json(&self.class_names)),
            (meta_key::SOURCE, self.source.clone()),
            (meta_key::SOURCE_CHECKSUM, self.source_checksum.clone()),
        ];
        if let Some(c) = &self.coarse_class_names {
            kv.push((meta_key::COARSE_CLASS_NAMES, json(c)));
        }
        if let Some(s) = &self.subset {
            kv.push((
                meta_key::SUBSET,
                serde_json::to_string(s).expect("subset serialises"),
            ));
        }
        kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Parses and checks the footer metadata of the table at `path`.
    pub fn from_key_values(path: &Path, kv: &HashMap<String, String>) -> Result<Self> {
        let bad = |msg: String| FormatError::invalid(path, msg);
        let get = |key: &str| {
            kv.get(key)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("not an image table: metadata key {key} is missing")))
        };
        let kind = get(meta_key::KIND)?;
        if kind != KIND_IMAGES {
            return Err(bad(format!("not an image table: it is a {kind:?} table")));
        }
        let version: u32 = get(meta_key::FORMAT_VERSION)?
            .parse()
            .map_err(|_| bad("format version is not a number".into()))?;
        if version > IMAGE_TABLE_VERSION {
            return Err(bad(format!(
                "image table format version {version} is newer than this build reads \
                 (up to {IMAGE_TABLE_VERSION}); upgrade tsimcne"
            )));
        }
        let dim = |key: &str, max: u32| -> Result<u32> {
            let v: u32 = get(key)?
                .parse()
                .map_err(|_| bad(format!("metadata {key} is not a whole number")))?;
            if v == 0 || v > max {
                return Err(bad(format!(
                    "metadata {key} = {v} is out of range 1..={max}"
                )));
            }
            Ok(v)
        };
        let height = dim(meta_key::HEIGHT, 1 << 15)?;
        let width = dim(meta_key::WIDTH, 1 << 15)?;
        let channels = dim(meta_key::CHANNELS, 4)?;
        if channels != 1 && channels != 3 {
            return Err(bad(format!(
                "metadata {} = {channels}, expected 1 or 3",
                meta_key::CHANNELS
            )));
        }
        let names = |key: &str| -> Result<Vec<String>> {
            serde_json::from_str(get(key)?)
                .map_err(|e| bad(format!("metadata {key} is not a JSON list of strings: {e}")))
        };
        let class_names = names(meta_key::CLASS_NAMES)?;
        let coarse_class_names = if kv.contains_key(meta_key::COARSE_CLASS_NAMES) {
            Some(names(meta_key::COARSE_CLASS_NAMES)?)
        } else {
            None
        };
        let subset = match kv.get(meta_key::SUBSET) {
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("metadata {} is malformed: {e}", meta_key::SUBSET)))?,
            ),
            None => None,
        };
        Ok(ImageMeta {
            height,
            width,
            channels,
            class_names,
            coarse_class_names,
            source: get(meta_key::SOURCE)?.to_string(),
            source_checksum: get(meta_key::SOURCE_CHECKSUM)?.to_string(),
            subset,
        })
    }

    /// The Arrow schema of a table with this metadata.
    pub fn schema(&self) -> SchemaRef {
        let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let mut fields = vec![
            Field::new(column::ID, DataType::UInt32, false),
            Field::new(column::SPLIT, DataType::Utf8, false),
            Field::new(column::LABEL, DataType::Int32, true),
            Field::new(column::LABEL_NAME, dict(), true),
        ];
        if self.has_coarse() {
            fields.push(Field::new(column::COARSE_LABEL, DataType::Int32, true));
            fields.push(Field::new(column::COARSE_LABEL_NAME, dict(), true));
        }
        fields.push(Field::new(column::IMAGE, DataType::Binary, false));
        // The facts travel twice: in the Parquet footer (for any Parquet
        // reader) and in the embedded Arrow schema, which pyarrow prefers
        // when it builds `table.schema.metadata`.
        let metadata = self.to_key_values().into_iter().collect::<HashMap<_, _>>();
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }

    /// Rows per row group for [`ROW_GROUP_TARGET_BYTES`].
    pub fn rows_per_group(&self) -> usize {
        (ROW_GROUP_TARGET_BYTES / self.image_len().max(1)).clamp(256, 1 << 16)
    }
}

/// A whole image table in memory, pixels in one contiguous buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    pub meta: ImageMeta,
    pub splits: Vec<Split>,
    pub labels: Vec<Option<i32>>,
    /// Empty unless `meta.coarse_class_names` is set.
    pub coarse_labels: Vec<Option<i32>>,
    /// `len() * meta.image_len()` bytes; image `i` starts at `i * image_len`.
    pub pixels: Vec<u8>,
    /// Each image's source file (folder tables); empty for other sources.
    pub paths: Vec<SourcePath>,
}

/// An image's file, relative to the folder `prep` read, `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePath {
    /// The path as text; a name that is not UTF-8 has U+FFFD in place of
    /// its invalid bytes here, and its exact bytes in `bytes`.
    pub text: String,
    /// The exact bytes, only where `text` is lossy.
    pub bytes: Option<Vec<u8>>,
}

impl SourcePath {
    /// The path of raw file-name bytes: exact text when they are UTF-8.
    pub fn from_bytes(raw: &[u8]) -> Self {
        match std::str::from_utf8(raw) {
            Ok(t) => Self {
                text: t.to_owned(),
                bytes: None,
            },
            Err(_) => Self {
                text: String::from_utf8_lossy(raw).into_owned(),
                bytes: Some(raw.to_vec()),
            },
        }
    }
}

impl ImageSet {
    /// A table of `labels.len()` images, all in the training split, with no
    /// coarse labels and no source paths. Not checked: see [`Self::check`].
    pub fn train_only(meta: ImageMeta, labels: Vec<Option<i32>>, pixels: Vec<u8>) -> Self {
        Self {
            meta,
            splits: vec![Split::Train; labels.len()],
            labels,
            coarse_labels: Vec::new(),
            pixels,
            paths: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.splits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
    }

    /// The HWC bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.meta.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Checks that the columns agree with each other and with the metadata.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.len();
        if self.labels.len() != n {
            return Err(format!("{} labels for {n} images", self.labels.len()));
        }
        if self.pixels.len() != n * self.meta.image_len() {
            return Err(format!(
                "{} pixel bytes for {n} images of {} bytes",
                self.pixels.len(),
                self.meta.image_len()
            ));
        }
        if n > u32::MAX as usize {
            return Err(format!("{n} images is more than ids can number"));
        }
        if !self.paths.is_empty() && self.paths.len() != n {
            return Err(format!("{} paths for {n} images", self.paths.len()));
        }
        check_labels(&self.labels, &self.meta.class_names, "label")?;
        match &self.meta.coarse_class_names {
            Some(names) => {
                if self.coarse_labels.len() != n {
                    return Err(format!(
                        "{} coarse labels for {n} images",
                        self.coarse_labels.len()
                    ));
                }
                check_labels(&self.coarse_labels, names, "coarse label")?;
            }
            None if !self.coarse_labels.is_empty() => {
                return Err("coarse labels without coarse class names".into());
            }
            None => {}
        }
        Ok(())
    }
}

fn check_labels(
    labels: &[Option<i32>],
    names: &[String],
    what: &str,
) -> std::result::Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    for (i, l) in labels.iter().enumerate() {
        if let Some(l) = *l
            && (l < 0 || l as usize >= names.len())
        {
            return Err(format!(
                "row {i}: {what} {l} is outside 0..{} (the class names)",
                names.len()
            ));
        }
    }
    Ok(())
}

/// Writer settings: zstd level 1 compresses pixels well at a speed close to
/// snappy's; the image column carries no statistics or dictionary (both are
/// useless for unique binary blobs and cost time).
fn writer_properties(meta: &ImageMeta) -> WriterProperties {
    let kv = meta
        .to_key_values()
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_max_row_group_row_count(Some(meta.rows_per_group()))
        .set_column_dictionary_enabled(column::IMAGE.into(), false)
        .set_column_statistics_enabled(column::IMAGE.into(), EnabledStatistics::None)
        .set_key_value_metadata(Some(kv))
        .set_created_by(format!("tsimcne {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The table's schema: the metadata's columns, and the `path` columns when
/// the set has paths (`path_bytes` only when some name is not UTF-8).
fn schema_of(set: &ImageSet) -> SchemaRef {
    let base = set.meta.schema();
    if set.paths.is_empty() {
        return base;
    }
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    let image = fields.pop().expect("the image column is last");
    fields.push(Field::new(column::PATH, DataType::Utf8, false));
    if set.paths.iter().any(|p| p.bytes.is_some()) {
        fields.push(Field::new(column::PATH_BYTES, DataType::Binary, true));
    }
    fields.push(image);
    Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
}

/// Builds the record batch for rows `range` of `set`.
fn batch(
    set: &ImageSet,
    schema: &SchemaRef,
    range: std::ops::Range<usize>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let ids = UInt32Array::from_iter_values(range.clone().map(|i| i as u32));
    let splits =
        StringArray::from_iter_values(set.splits[range.clone()].iter().map(|s| s.as_str()));
    let names =
        |labels: &[Option<i32>], names: &[String]| -> Result<ArrayRef, arrow_schema::ArrowError> {
            let keys = Int32Array::from(labels.to_vec());
            let values = StringArray::from_iter_values(names.iter());
            Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                keys,
                Arc::new(values),
            )?))
        };
    let labels = &set.labels[range.clone()];
    // An unlabelled table has no names: its label_name column is all null.
    let label_names = if set.meta.class_names.is_empty() {
        names(&vec![None; labels.len()], &[])?
    } else {
        names(labels, &set.meta.class_names)?
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(splits),
        Arc::new(Int32Array::from(labels.to_vec())),
        label_names,
    ];
    if let Some(coarse_names) = &set.meta.coarse_class_names {
        let coarse = &set.coarse_labels[range.clone()];
        columns.push(Arc::new(Int32Array::from(coarse.to_vec())));
        columns.push(names(coarse, coarse_names)?);
    }
    if !set.paths.is_empty() {
        let paths = &set.paths[range.clone()];
        columns.push(Arc::new(StringArray::from_iter_values(
            paths.iter().map(|p| p.text.as_str()),
        )));
        if schema.column_with_name(column::PATH_BYTES).is_some() {
            columns.push(Arc::new(BinaryArray::from_iter(
                paths.iter().map(|p| p.bytes.as_deref()),
            )));
        }
    }
    let image_len = set.meta.image_len();
    let images = BinaryArray::from_iter_values(
        range.map(|i| &set.pixels[i * image_len..(i + 1) * image_len]),
    );
    columns.push(Arc::new(images));
    RecordBatch::try_new(schema.clone(), columns)
}

/// Writes `set` to `path` atomically (temporary file, fsync, rename).
pub fn write_image_table(path: &Path, set: &ImageSet) -> Result<()> {
    set.check().map_err(|m| FormatError::invalid(path, m))?;
    let schema = schema_of(set);
    let props = writer_properties(&set.meta);
    let group = set.meta.rows_per_group();
    write_atomic(path, |out| {
        let parquet_err = |source| FormatError::parquet_write(path, source);
        let arrow_err = |source| FormatError::Arrow {
            path: path.to_path_buf(),
            source,
        };
        let mut w = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(parquet_err)?;
        let mut start = 0;
        while start < set.len() {
            let end = (start + group).min(set.len());
            w.write(&batch(set, &schema, start..end).map_err(arrow_err)?)
                .map_err(parquet_err)?;
            w.flush().map_err(parquet_err)?;
            start = end;
        }
        w.close().map_err(parquet_err)?;
        Ok(())
    })
}

/// One streamed chunk of an image table (about one row group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageBatch {
    pub ids: Vec<u32>,
    pub splits: Vec<Split>,
    pub labels: Vec<Option<i32>>,
    /// Empty unless the table has coarse labels.
    pub coarse_labels: Vec<Option<i32>>,
    /// HWC bytes of every image in the batch, back to back; empty when the
    /// reader was opened without images.
    pub pixels: Vec<u8>,
    /// Empty unless the table has a `path` column.
    pub paths: Vec<SourcePath>,
}

impl ImageBatch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Streams an image table one row group at a time, checking every batch.
pub struct ImageTableReader {
    path: PathBuf,
    meta: ImageMeta,
    num_rows: usize,
    with_images: bool,
    /// Whether the table has the `path` and the `path_bytes` column.
    paths: (bool, bool),
    next_id: usize,
    inner: ParquetRecordBatchReader,
}

impl std::fmt::Debug for ImageTableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageTableReader")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .field("num_rows", &self.num_rows)
            .finish_non_exhaustive()
    }
}

impl ImageTableReader {
    /// Opens `path` and checks its metadata and schema.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens `path` without decoding the `image` column: ids, splits and
    /// labels only, which is fast.
    pub fn open_labels(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, with_images: bool) -> Result<Self> {
        crate::contain::decoding(path, || Self::open_unguarded(path, with_images))
    }

    fn open_unguarded(path: &Path, with_images: bool) -> Result<Self> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let parquet_err = |source| FormatError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
        let kv: HashMap<String, String> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        let meta = ImageMeta::from_key_values(path, &kv)?;
        check_chunks(path, builder.metadata())?;
        let num_rows = usize::try_from(builder.metadata().file_metadata().num_rows())
            .map_err(|_| FormatError::invalid(path, "negative row count"))?;

        let schema = builder.schema().clone();
        let mut wanted = vec![column::ID, column::SPLIT, column::LABEL];
        if meta.has_coarse() {
            wanted.push(column::COARSE_LABEL);
        }
        if with_images {
            wanted.push(column::IMAGE);
        }
        let has = |name| schema.column_with_name(name).is_some();
        let paths = (has(column::PATH), has(column::PATH_BYTES));
        if paths.0 {
            wanted.push(column::PATH);
        }
        if paths.0 && paths.1 {
            wanted.push(column::PATH_BYTES);
        }
        let mut roots = Vec::new();
        for name in &wanted {
            let (idx, field) = schema
                .column_with_name(name)
                .ok_or_else(|| FormatError::invalid(path, format!("column {name:?} is missing")))?;
            check_type(path, field)?;
            roots.push(idx);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let inner = builder
            .with_projection(mask)
            .with_batch_size(meta.rows_per_group())
            .build()
            .map_err(parquet_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            num_rows,
            with_images,
            paths,
            next_id: 0,
            inner,
        })
    }

    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn convert(&mut self, batch: RecordBatch) -> Result<ImageBatch> {
        let path = &self.path;
        let bad = |m: String| FormatError::invalid(path, m);
        let col = |name: &str| -> Result<&ArrayRef> {
            batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("column {name:?} is missing")))
        };
        // `check_type` admitted each column's type when the file was opened.
        let mistyped = |name: &str| bad(format!("column {name:?} changes its type"));
        let first = self.next_id;
        let id_cells =
            convert::integers(col(column::ID)?.as_ref()).ok_or_else(|| mistyped(column::ID))?;
        let mut ids = Vec::with_capacity(id_cells.len());
        for (k, id) in id_cells.into_iter().enumerate() {
            let id = id.ok_or_else(|| bad("column \"id\" has nulls".into()))?;
            if id != (first + k) as i64 {
                return Err(bad(format!(
                    "row {}: id {id}, expected {} (ids must be 0..N in order)",
                    first + k,
                    first + k
                )));
            }
            ids.push(id as u32);
        }
        let splits = convert::strings(col(column::SPLIT)?.as_ref())
            .ok_or_else(|| mistyped(column::SPLIT))?
            .into_iter()
            .enumerate()
            .map(|(k, s)| {
                s.as_deref().and_then(Split::parse).ok_or_else(|| {
                    bad(format!(
                        "row {}: split {s:?} is not \"train\" or \"test\"",
                        first + k
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let labels_of = |name: &str| -> Result<Vec<Option<i32>>> {
            let cells = convert::integers(col(name)?.as_ref()).ok_or_else(|| mistyped(name))?;
            cells
                .into_iter()
                .enumerate()
                .map(|(k, l)| {
                    l.map(|l| {
                        i32::try_from(l).map_err(|_| {
                            bad(format!("row {}: {name} {l} is out of range", first + k))
                        })
                    })
                    .transpose()
                })
                .collect()
        };
        let labels = labels_of(column::LABEL)?;
        check_labels(&labels, &self.meta.class_names, "label")
            .map_err(|m| bad(format!("{m} (batch from row {first})")))?;
        let coarse_labels = match &self.meta.coarse_class_names {
            Some(names) => {
                let c = labels_of(column::COARSE_LABEL)?;
                check_labels(&c, names, "coarse label")
                    .map_err(|m| bad(format!("{m} (batch from row {first})")))?;
                c
            }
            None => Vec::new(),
        };
        let mut pixels = Vec::new();
        if self.with_images {
            let images = col(column::IMAGE)?;
            let n = self.meta.image_len();
            // The bytes present, not the header's size times the rows: a
            // footer claiming huge images never sizes an allocation.
            let present = images.get_buffer_memory_size();
            pixels.reserve(present.min(images.len().saturating_mul(n)));
            let meta = &self.meta;
            convert::for_each_bytes(images.as_ref(), |k, img| {
                let img = img.ok_or_else(|| bad(format!("row {}: image is null", first + k)))?;
                if img.len() != n {
                    return Err(bad(format!(
                        "row {}: image has {} bytes, expected {n} ({}x{}x{})",
                        first + k,
                        img.len(),
                        meta.height,
                        meta.width,
                        meta.channels
                    )));
                }
                pixels.extend_from_slice(img);
                Ok(())
            })
            .ok_or_else(|| mistyped(column::IMAGE))??;
        }
        let mut paths = Vec::new();
        if self.paths.0 {
            let texts = convert::strings(col(column::PATH)?.as_ref())
                .ok_or_else(|| mistyped(column::PATH))?;
            let mut bytes = vec![None; texts.len()];
            if self.paths.1 {
                convert::for_each_bytes(col(column::PATH_BYTES)?.as_ref(), |k, b| {
                    bytes[k] = b.map(<[u8]>::to_vec);
                    Ok(())
                })
                .ok_or_else(|| mistyped(column::PATH_BYTES))??;
            }
            for (k, (text, bytes)) in texts.into_iter().zip(bytes).enumerate() {
                let text = text.ok_or_else(|| bad(format!("row {}: path is null", first + k)))?;
                paths.push(SourcePath { text, bytes });
            }
        }
        self.next_id += ids.len();
        Ok(ImageBatch {
            ids,
            paths,
            splits,
            labels,
            coarse_labels,
            pixels,
        })
    }

    /// Reads every remaining row into one [`ImageSet`].
    pub fn read_all(mut self) -> Result<ImageSet> {
        let mut set = ImageSet {
            meta: self.meta.clone(),
            splits: Vec::new(),
            labels: Vec::new(),
            coarse_labels: Vec::new(),
            pixels: Vec::new(),
            paths: Vec::new(),
        };
        // The row count comes from the footer: trust it only as far as the
        // file size justifies before reserving memory for it.
        let file_len = std::fs::metadata(&self.path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let hint = self.num_rows.min(file_len);
        set.splits.reserve(hint);
        set.labels.reserve(hint);
        for b in self.by_ref() {
            let b = b?;
            set.splits.extend(b.splits);
            set.labels.extend(b.labels);
            set.coarse_labels.extend(b.coarse_labels);
            set.pixels.extend(b.pixels);
            set.paths.extend(b.paths);
        }
        if set.len() != self.num_rows {
            return Err(FormatError::invalid(
                &self.path,
                format!("footer says {} rows, found {}", self.num_rows, set.len()),
            ));
        }
        Ok(set)
    }
}

impl Iterator for ImageTableReader {
    type Item = Result<ImageBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = &mut self.inner;
        let batch = crate::contain::decoding(&self.path, || Ok(inner.next()));
        let batch = match batch {
            Ok(None) => return None,
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(source))) => {
                return Some(Err(FormatError::Arrow {
                    path: self.path.clone(),
                    source,
                }));
            }
            Err(e) => return Some(Err(e)),
        };
        Some(self.convert(batch))
    }
}

/// Checks that every column chunk the footer lists lies inside the file,
/// before any is read: the Parquet reader trusts these numbers (it panics
/// on a negative one and reads as much as a chunk claims).
pub(crate) fn check_chunks(
    path: &Path,
    md: &parquet::file::metadata::ParquetMetaData,
) -> Result<()> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| FormatError::io(path, e))?
        .len();
    for (g, group) in md.row_groups().iter().enumerate() {
        if group.num_rows() < 0 {
            return Err(FormatError::invalid(
                path,
                format!("row group {g} has a negative row count"),
            ));
        }
        for c in group.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l))
                .is_some_and(|end| end <= file_len)
                && c.data_page_offset() >= 0
                && c.uncompressed_size() >= 0;
            if !inside {
                return Err(FormatError::invalid(
                    path,
                    format!(
                        "corrupt footer: row group {g}, column {} claims bytes {start}..+{len} of a {file_len}-byte file",
                        c.column_path()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Accepts the types we write and the obvious equivalents other tools write
/// (e.g. pandas' `large_string`, or an integer label of another width).
fn check_type(path: &Path, field: &Field) -> Result<()> {
    use DataType::*;
    let name = field.name().as_str();
    let is_text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let ok = match name {
        column::ID => field.data_type().is_integer(),
        column::LABEL | column::COARSE_LABEL => field.data_type().is_integer(),
        column::SPLIT => match field.data_type() {
            Dictionary(_, v) => is_text(v),
            t => is_text(t),
        },
        column::IMAGE | column::PATH_BYTES => matches!(
            field.data_type(),
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_)
        ),
        column::PATH => is_text(field.data_type()),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(FormatError::invalid(
            path,
            format!(
                "column {name:?} has type {}, which is not accepted",
                field.data_type()
            ),
        ))
    }
}

/// Reads the whole table at `path` into memory.
pub fn read_image_table(path: &Path) -> Result<ImageSet> {
    ImageTableReader::open(path)?.read_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(n: usize, coarse: bool) -> ImageSet {
        let meta = ImageMeta {
            height: 3,
            width: 2,
            channels: 3,
            class_names: vec!["cat".into(), "dog".into(), "ému".into()],
            coarse_class_names: coarse.then(|| vec!["animal".into(), "bird".into()]),
            source: "test".into(),
            source_checksum: "md5:00".into(),
            subset: Some(Subset {
                limit: n,
                seed: 7,
                of: 2 * n,
            }),
        };
        let labels: Vec<Option<i32>> = (0..n)
            .map(|i| {
                if i % 5 == 4 {
                    None
                } else {
                    Some((i % 3) as i32)
                }
            })
            .collect();
        ImageSet {
            splits: (0..n)
                .map(|i| if i < n / 2 { Split::Train } else { Split::Test })
                .collect(),
            coarse_labels: if coarse {
                labels.iter().map(|l| l.map(|l| (l == 2) as i32)).collect()
            } else {
                vec![]
            },
            labels,
            pixels: (0..n * meta.image_len())
                .map(|i| (i * 31 % 251) as u8)
                .collect(),
            paths: Vec::new(),
            meta,
        }
    }

    #[test]
    fn paths_round_trip_exactly_with_bytes_only_where_needed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let mut set = sample(600, false);
        set.paths = (0..600)
            .map(|i| SourcePath::from_bytes(format!("c{}/{i}.png", i % 3).as_bytes()))
            .collect();
        write_image_table(&p, &set).unwrap();
        assert_eq!(read_image_table(&p).unwrap(), set);
        let schema = ImageTableReader::open(&p).unwrap();
        assert!(
            !schema.paths.1,
            "no path_bytes column when every name is UTF-8"
        );
        set.paths[7] = SourcePath::from_bytes(b"c1/caf\xe9.png");
        assert_eq!(set.paths[7].text, "c1/caf\u{fffd}.png");
        write_image_table(&p, &set).unwrap();
        let back = read_image_table(&p).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.paths[7].bytes.as_deref(), Some(&b"c1/caf\xe9.png"[..]));
        assert_eq!(back.paths[8].bytes, None);
        // Without images the paths still come back.
        let mut r = ImageTableReader::open_labels(&p).unwrap();
        assert_eq!(r.next().unwrap().unwrap().paths[7], set.paths[7]);
        // A wrong count is refused before anything is written.
        set.paths.pop();
        assert!(write_image_table(&p, &set).is_err());
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for coarse in [false, true] {
            let set = sample(1000, coarse);
            let p = dir.path().join("t.parquet");
            write_image_table(&p, &set).unwrap();
            assert_eq!(read_image_table(&p).unwrap(), set);
        }
    }

    #[test]
    fn streams_in_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = sample(600, false);
        // 8 MiB / (64*64*3) = 682 rows per group: 600 rows of 64x64x3 images
        // would be one group, so make the images big enough for several.
        set.meta.height = 128;
        set.meta.width = 128;
        set.pixels = vec![7; 600 * set.meta.image_len()];
        let p = dir.path().join("t.parquet");
        write_image_table(&p, &set).unwrap();
        let r = ImageTableReader::open(&p).unwrap();
        let per = set.meta.rows_per_group();
        assert!(per < 600);
        let sizes: Vec<usize> = r.map(|b| b.unwrap().len()).collect();
        assert!(sizes.len() > 1, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s <= per));
    }

    #[test]
    fn labels_only_reader_skips_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let set = sample(50, false);
        let p = dir.path().join("t.parquet");
        write_image_table(&p, &set).unwrap();
        let b: Vec<ImageBatch> = ImageTableReader::open_labels(&p)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let labels: Vec<_> = b.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(labels, set.labels);
        assert!(b.iter().all(|b| b.pixels.is_empty()));
    }

    #[test]
    fn newer_version_is_refused() {
        let set = sample(4, false);
        let mut kv: HashMap<_, _> = set.meta.to_key_values().into_iter().collect();
        kv.insert(meta_key::FORMAT_VERSION.into(), "2".into());
        let err = ImageMeta::from_key_values(Path::new("x.parquet"), &kv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.parquet") && err.contains("newer"), "{err}");
    }

    #[test]
    fn metadata_round_trip_and_errors() {
        let meta = sample(4, true).meta;
        let kv: HashMap<_, _> = meta.to_key_values().into_iter().collect();
        assert_eq!(
            ImageMeta::from_key_values(Path::new("x"), &kv).unwrap(),
            meta
        );
        for (key, value, expect) in [
            (meta_key::KIND, "embedding", "not an image table"),
            (meta_key::HEIGHT, "0", "out of range"),
            (meta_key::CHANNELS, "2", "expected 1 or 3"),
            (meta_key::CLASS_NAMES, "[1]", "JSON list"),
        ] {
            let mut bad = kv.clone();
            bad.insert(key.into(), value.into());
            let err = ImageMeta::from_key_values(Path::new("x"), &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{key}: {err}");
        }
        let mut missing = kv.clone();
        missing.remove(meta_key::WIDTH);
        let err = ImageMeta::from_key_values(Path::new("x"), &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains(meta_key::WIDTH), "{err}");
    }

    #[test]
    fn inconsistent_sets_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let mut set = sample(10, false);
        set.labels[3] = Some(9);
        let err = write_image_table(&p, &set).unwrap_err().to_string();
        assert!(err.contains("row 3"), "{err}");
        let mut set = sample(10, false);
        set.pixels.pop();
        assert!(write_image_table(&p, &set).is_err());
        assert!(!p.exists());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        write_image_table(&p, &sample(100, false)).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 9] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(read_image_table(&p).is_err(), "cut at {cut}");
        }
    }
}
