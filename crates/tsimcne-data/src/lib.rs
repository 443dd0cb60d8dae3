//! Dataset readers for t-SimCNE: they turn a source (CIFAR archive, IDX
//! files, image folder) into an [`ImageSet`], which
//! [`tsimcne_format::write_image_table`] writes as the image table.
//!
//! [`prep`] is the whole `prep` stage; the binary only parses arguments.

pub mod checksum;
pub mod cifar;
pub mod download;
mod error;
pub mod folder;
pub mod idx;
pub mod progress;
pub mod subset;

use std::path::{Path, PathBuf};

pub use error::{PrepError, Result};
pub use folder::{Duplicate, Duplicates, Fit, FolderOptions, Skipped, Unreadable};
pub use idx::IdxDataset;
pub use progress::{NoProgress, Progress, Unit};
use tsimcne_format::{ImageSet, Subset};

/// What `prep` reads (its value names are [`Source::name`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Source {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
    Folder,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Cifar10 => "cifar10",
            Source::Cifar100 => "cifar100",
            Source::Mnist => "mnist",
            Source::FashionMnist => "fashion-mnist",
            Source::Folder => "folder",
        }
    }

    /// The official archive, for the sources that have one.
    pub fn cifar_spec(self) -> Option<&'static cifar::CifarSpec> {
        match self {
            Source::Cifar10 => Some(&cifar::CIFAR10),
            Source::Cifar100 => Some(&cifar::CIFAR100),
            _ => None,
        }
    }
}

/// The resolved settings of one `prep` run.
#[derive(Clone, Debug)]
pub struct PrepConfig {
    pub source: Source,
    /// Archive, directory of IDX files, or image folder.
    pub input: PathBuf,
    pub out: PathBuf,
    /// Check the official size and MD5 of a CIFAR archive.
    pub verify: bool,
    /// Fetch the archive from this URL into `input` if `input` is missing.
    pub download: Option<String>,
    /// Keep a stratified subset of this many images.
    pub limit: Option<usize>,
    pub seed: u64,
    pub folder: FolderOptions,
}

/// What `prep` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepSummary {
    pub images: usize,
    pub train: usize,
    pub test: usize,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub classes: usize,
    /// The folder files left out by [`Unreadable::Skip`].
    pub skipped: Vec<Skipped>,
    /// Where they are listed (with [`Unreadable::Skip`] only).
    pub skipped_list: Option<PathBuf>,
    /// The folder files identical to an earlier one.
    pub duplicates: Vec<Duplicate>,
    /// Where they are listed (when there are any).
    pub duplicates_list: Option<PathBuf>,
    /// What the user should know about a table that was written: a CIFAR
    /// archive that holds fewer records than the official one (possible
    /// only with `--no-verify` or an extracted folder).
    pub warnings: Vec<String>,
}

/// `OUT.<what>.csv` beside the table `OUT.parquet`: `skipped`, `duplicates`.
pub fn list_path(out: &Path, what: &str) -> PathBuf {
    let stem = match out.extension() {
        Some(e) if e == "parquet" => out.with_extension(""),
        _ => out.to_path_buf(),
    };
    let mut name = stem.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}.csv"));
    out.with_file_name(name)
}

/// A two-column CSV: `header`, then one line per row.
fn csv<'a>(header: &str, rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = format!("{header}\n");
    for (a, b) in rows {
        out.push_str(&format!("{},{}\n", csv_field(a), csv_field(b)));
    }
    out
}

/// Writes the list `OUT.<what>.csv` of this run (atomically) when there is
/// one; otherwise removes an earlier folder run's, so no list outlives the
/// run it describes.
fn write_list(cfg: &PrepConfig, what: &str, list: Option<String>) -> Result<Option<PathBuf>> {
    let path = list_path(&cfg.out, what);
    match list {
        Some(text) => {
            tsimcne_format::atomic::write_bytes_atomic(&path, text.as_bytes())?;
            Ok(Some(path))
        }
        None => {
            if cfg.source == Source::Folder
                && let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(PrepError::io(&path, e));
            }
            Ok(None)
        }
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a
/// line break, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn apply_subset(set: ImageSet, rows: &[usize], seed: u64) -> ImageSet {
    let n = set.meta.image_len();
    let pick = |v: &[Option<i32>]| -> Vec<Option<i32>> {
        if v.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&i| v[i]).collect()
        }
    };
    let mut pixels = Vec::with_capacity(rows.len() * n);
    for &i in rows {
        pixels.extend_from_slice(set.image(i));
    }
    let mut meta = set.meta.clone();
    meta.subset = Some(Subset {
        limit: rows.len(),
        seed,
        of: set.len(),
    });
    ImageSet {
        splits: rows.iter().map(|&i| set.splits[i]).collect(),
        labels: pick(&set.labels),
        coarse_labels: pick(&set.coarse_labels),
        paths: if set.paths.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&i| set.paths[i].clone()).collect()
        },
        pixels,
        meta,
    }
}

/// Reads the source, optionally subsets it, and writes the image table
/// atomically to `cfg.out`.
pub fn prep(cfg: &PrepConfig, progress: &dyn Progress) -> Result<PrepSummary> {
    // Fail on a bad output path before minutes of work.
    tsimcne_format::atomic::check_output_path(&cfg.out)?;
    if let Some((h, w)) = cfg.folder.size
        && (h == 0 || w == 0)
    {
        return Err(PrepError::invalid(&cfg.input, "--size must be positive"));
    }
    if cfg.folder.unreadable == Unreadable::Skip && cfg.source != Source::Folder {
        return Err(PrepError::invalid(
            &cfg.input,
            "--skip-unreadable is for folder sources: a dataset file is read whole or not at all",
        ));
    }
    if cfg.folder.duplicates == Duplicates::Drop && cfg.source != Source::Folder {
        return Err(PrepError::invalid(
            &cfg.input,
            "--dedupe is for folder sources",
        ));
    }
    let mut skipped = Vec::new();
    let mut duplicates = Vec::new();
    let mut warnings = Vec::new();
    let set = match cfg.source {
        Source::Cifar10 | Source::Cifar100 => {
            let spec = cfg.source.cifar_spec().expect("cifar source");
            if let Some(url) = &cfg.download
                && !cfg.input.exists()
            {
                let expect = cfg.verify.then_some((spec.size, spec.md5));
                download::download(url, &cfg.input, expect, progress)?;
            }
            let set = cifar::read_cifar(spec, &cfg.input, cfg.verify, progress)?;
            let train = set
                .splits
                .iter()
                .filter(|s| **s == tsimcne_format::Split::Train)
                .count();
            let official = spec.records;
            if (train, set.len() - train) != official {
                warnings.push(format!(
                    "{} holds {train} train and {} test records; the official {} holds {} and {}",
                    cfg.input.display(),
                    set.len() - train,
                    spec.archive_name,
                    official.0,
                    official.1
                ));
            }
            set
        }
        Source::Mnist => idx::read_idx_dir(IdxDataset::Mnist, &cfg.input, progress)?,
        Source::FashionMnist => idx::read_idx_dir(IdxDataset::FashionMnist, &cfg.input, progress)?,
        Source::Folder => {
            let listing = folder::scan(&cfg.input)?;
            let entries = match cfg.limit {
                Some(limit) => {
                    let labels: Vec<_> = listing.entries.iter().map(|e| e.label).collect();
                    let splits = vec![tsimcne_format::Split::Train; labels.len()];
                    let rows = subset::stratified_subset(&splits, &labels, limit, cfg.seed);
                    rows.iter().map(|&i| listing.entries[i].clone()).collect()
                }
                None => listing.entries.clone(),
            };
            let read = folder::read_folder(&cfg.input, &listing, &entries, &cfg.folder, progress)?;
            skipped = read.skipped;
            duplicates = read.duplicates;
            let mut set = read.set;
            if entries.len() < listing.entries.len() {
                set.meta.subset = Some(Subset {
                    limit: entries.len(),
                    seed: cfg.seed,
                    of: listing.entries.len(),
                });
            }
            set
        }
    };
    let set = match cfg.limit {
        Some(limit) if cfg.source != Source::Folder && limit < set.len() => {
            let rows = subset::stratified_subset(&set.splits, &set.labels, limit, cfg.seed);
            apply_subset(set, &rows, cfg.seed)
        }
        _ => set,
    };
    let set = match cfg.folder.size {
        Some(size) if cfg.source != Source::Folder => folder::resize_set(set, size, cfg.folder.fit),
        _ => set,
    };
    progress.begin("writing parquet", Some(set.len() as u64), Unit::Images);
    tsimcne_format::write_image_table(&cfg.out, &set)?;
    progress.advance(set.len() as u64);
    progress.end();
    // The skipped list whenever files may be skipped (empty or not), the
    // duplicates when there are any.
    let skipped_list = write_list(
        cfg,
        "skipped",
        (cfg.folder.unreadable == Unreadable::Skip)
            .then(|| csv("path,reason", skipped.iter().map(|s| (&*s.rel, &*s.reason)))),
    )?;
    let duplicates_list = write_list(
        cfg,
        "duplicates",
        (!duplicates.is_empty()).then(|| {
            csv(
                "path,duplicate_of",
                duplicates.iter().map(|d| (&*d.rel, &*d.of)),
            )
        }),
    )?;
    let train = set
        .splits
        .iter()
        .filter(|s| **s == tsimcne_format::Split::Train)
        .count();
    Ok(PrepSummary {
        images: set.len(),
        train,
        test: set.len() - train,
        height: set.meta.height,
        width: set.meta.width,
        channels: set.meta.channels,
        classes: set.meta.class_names.len(),
        skipped,
        skipped_list,
        duplicates,
        duplicates_list,
        warnings,
    })
}

/// The default input of a source, if it has one: Debian's Fashion-MNIST when
/// installed, or the official archive name in `data/`.
pub fn default_input(source: Source, debian_dir_exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    match source {
        Source::FashionMnist => {
            let p = Path::new(idx::FASHION_MNIST_DEBIAN_DIR);
            debian_dir_exists(p).then(|| p.to_path_buf())
        }
        Source::Cifar10 | Source::Cifar100 => {
            let spec = source.cifar_spec().expect("cifar source");
            Some(Path::new("data").join(spec.archive_name))
        }
        _ => None,
    }
}
