//! MNIST-style IDX files (MNIST, Fashion-MNIST), gzipped or not.
//!
//! **Invariant:** a header's dimensions never size an allocation before they
//! have been checked against the data actually present.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tsimcne_format::{ImageMeta, ImageSet, Split};

use crate::checksum::{listing_checksum, md5_bytes};
use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest side an IDX image may have.
const MAX_SIDE: u32 = 4096;

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Which IDX dataset: only the class names differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxDataset {
    Mnist,
    FashionMnist,
}

impl IdxDataset {
    pub fn source(self) -> &'static str {
        match self {
            IdxDataset::Mnist => "mnist",
            IdxDataset::FashionMnist => "fashion-mnist",
        }
    }

    pub fn class_names(self) -> Vec<String> {
        match self {
            IdxDataset::Mnist => (0..10).map(|d| d.to_string()).collect(),
            IdxDataset::FashionMnist => FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The file stems of one split, as the official downloads name them.
const SPLITS: [(Split, &str, &str); 2] = [
    (
        Split::Train,
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ),
    (
        Split::Test,
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ),
];

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// One decoded IDX file: its dimensions and the data after the header.
struct Idx {
    dims: Vec<u32>,
    data: Vec<u8>,
    md5: String,
}

/// Reads an IDX file of `ndim` dimensions with the given magic number.
fn read_idx(path: &Path, magic: u32, what: &'static str, progress: &dyn Progress) -> Result<Idx> {
    let raw = std::fs::read(path).map_err(|e| PrepError::io(path, e))?;
    progress.advance(raw.len() as u64);
    let md5 = md5_bytes(&raw);
    let gz = raw.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(&raw[..]))
    } else {
        Box::new(&raw[..])
    };
    let corrupt = |e: std::io::Error| PrepError::corrupt(path, e);

    let mut word = [0u8; 4];
    let mut read_u32 = |r: &mut dyn Read| -> Result<u32> {
        r.read_exact(&mut word).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                PrepError::corrupt(path, "file ends inside the header")
            } else {
                corrupt(e)
            }
        })?;
        Ok(u32::from_be_bytes(word))
    };
    let found = read_u32(&mut reader)?;
    if found != magic {
        return Err(PrepError::BadMagic {
            path: path.into(),
            expected: magic,
            found,
            what,
        });
    }
    let ndim = (magic & 0xff) as usize;
    let dims = (0..ndim)
        .map(|_| read_u32(&mut reader))
        .collect::<Result<Vec<_>>>()?;
    if dims.iter().skip(1).any(|&d| d == 0 || d > MAX_SIDE) {
        return Err(PrepError::Header {
            path: path.into(),
            detail: format!("dimensions {dims:?} are out of range"),
        });
    }
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .ok_or_else(|| PrepError::Header {
            path: path.into(),
            detail: format!("dimensions {dims:?} overflow"),
        })?;
    // Read at most one byte more than the header promises; the buffer grows
    // with the data present, never with the header's claim.
    let mut data = Vec::new();
    (&mut reader)
        .take(expected.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() as u64 != expected {
        let shape = dims
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("x");
        let held = if data.len() as u64 > expected {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(PrepError::Header {
            path: path.into(),
            detail: format!(
                "header says {shape} ({expected} data bytes) but the file holds {held}"
            ),
        });
    }
    if gz {
        // Drain so gzip verifies its CRC trailer.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(corrupt)?;
    }
    Ok(Idx { dims, data, md5 })
}

/// Reads the train and/or test pair of IDX files from `dir`. At least one
/// complete pair must be present; a lone images or labels file is an error.
pub fn read_idx_dir(dataset: IdxDataset, dir: &Path, progress: &dyn Progress) -> Result<ImageSet> {
    if !dir.is_dir() {
        return Err(PrepError::invalid(
            dir,
            "not a directory (expected one holding the IDX files)",
        ));
    }
    let mut found = Vec::new();
    for (split, images, labels) in SPLITS {
        match (find(dir, images), find(dir, labels)) {
            (Some(i), Some(l)) => found.push((split, i, l)),
            (None, None) => {}
            (Some(_), None) => {
                return Err(PrepError::Missing {
                    path: dir.into(),
                    missing: vec![format!("{labels}[.gz]")],
                });
            }
            (None, Some(_)) => {
                return Err(PrepError::Missing {
                    path: dir.into(),
                    missing: vec![format!("{images}[.gz]")],
                });
            }
        }
    }
    if found.is_empty() {
        return Err(PrepError::Missing {
            path: dir.into(),
            missing: vec![
                "train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz] and their labels"
                    .into(),
            ],
        });
    }
    let total: u64 = found
        .iter()
        .flat_map(|(_, i, l)| [i, l])
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .sum();
    progress.begin("reading idx", Some(total), Unit::Bytes);
    let classes = dataset.class_names();
    let mut shape: Option<(u32, u32)> = None;
    let mut sums = Vec::new();
    let (mut splits, mut labels, mut pixels) = (Vec::new(), Vec::new(), Vec::new());
    for (split, ipath, lpath) in &found {
        let images = read_idx(
            ipath,
            IMAGES_MAGIC,
            "IDX images, u8, 3 dimensions",
            progress,
        )?;
        let labs = read_idx(lpath, LABELS_MAGIC, "IDX labels, u8, 1 dimension", progress)?;
        let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
        if labs.dims[0] != n {
            return Err(PrepError::Header {
                path: lpath.clone(),
                detail: format!(
                    "{} labels for the {n} images of {}",
                    labs.dims[0],
                    ipath.display()
                ),
            });
        }
        match shape {
            Some(s) if s != (rows, cols) => {
                return Err(PrepError::Header {
                    path: ipath.clone(),
                    detail: format!(
                        "images are {rows}x{cols}, the other split's are {}x{}",
                        s.0, s.1
                    ),
                });
            }
            _ => shape = Some((rows, cols)),
        }
        if let Some((r, &l)) = labs
            .data
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= classes.len())
        {
            return Err(PrepError::corrupt(
                lpath,
                format!("label {r} is {l}, not below {}", classes.len()),
            ));
        }
        splits.extend(std::iter::repeat_n(*split, n as usize));
        labels.extend(labs.data.iter().map(|&l| Some(i32::from(l))));
        pixels.extend_from_slice(&images.data);
        for (p, idx) in [(ipath, &images), (lpath, &labs)] {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sums.push((name, idx.md5.clone()));
        }
    }
    progress.end();
    let (height, width) = shape.expect("at least one split was read");
    Ok(ImageSet {
        meta: ImageMeta {
            height,
            width,
            channels: 1,
            class_names: classes,
            coarse_class_names: None,
            source: dataset.source().into(),
            source_checksum: listing_checksum(sums),
            subset: None,
        },
        splits,
        labels,
        coarse_labels: Vec::new(),
        pixels,
        paths: Vec::new(),
    })
}
