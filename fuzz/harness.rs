//! The bodies of the fuzz targets, shared with the regression test
//! `tests/fuzz_regressions.rs` (which includes this file), so a crash input
//! replays exactly as the fuzzer ran it.
//!
//! Each target writes the input as files into a scratch folder and calls the
//! same library entry point as the binaries, so file handling is covered
//! too. A target returns the error the binary would print (the whole
//! source chain on one line, as `run_main` prints it), or `Ok`.
#![allow(dead_code)]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tsimcne_data::NoProgress;

pub type Outcome = Result<(), String>;

/// The targets, by name, for the regression test.
/// A fuzz target's body: the input bytes and a scratch directory.
pub type Target = fn(&[u8], &Path) -> Outcome;

pub const TARGETS: [(&str, Target); 4] = [
    ("idx", idx),
    ("cifar", cifar),
    ("image_table", image_table),
    ("model", model),
];

/// This process's scratch folder, in /dev/shm when there is one.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("tsimcne-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

/// The error as one line: the message and its sources, `: `-separated.
fn line(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn reset(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch folder");
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("scratch write");
}

fn idx_file(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// IDX: byte 0 even, the rest is the images file (beside a valid file of
/// one label); odd, the labels file (beside one valid 28×28 image).
pub fn idx(data: &[u8], dir: &Path) -> Outcome {
    let Some((&which, rest)) = data.split_first() else {
        return Ok(());
    };
    reset(dir);
    let images = dir.join("t10k-images-idx3-ubyte");
    let labels = dir.join("t10k-labels-idx1-ubyte");
    if which & 1 == 0 {
        write(&images, rest);
        write(&labels, &idx_file(0x801, &[1], &[3]));
    } else {
        write(&images, &idx_file(0x803, &[1, 28, 28], &[9; 784]));
        write(&labels, rest);
    }
    tsimcne_data::idx::read_idx_dir(tsimcne_data::IdxDataset::Mnist, dir, &NoProgress)
        .map(drop)
        .map_err(|e| line(&e))
}

/// CIFAR: byte 0 even, the rest is a CIFAR-10 archive (`.tar` or
/// `.tar.gz`); odd, a CIFAR-100 one. Read without the official-MD5 check.
pub fn cifar(data: &[u8], dir: &Path) -> Outcome {
    let Some((&which, rest)) = data.split_first() else {
        return Ok(());
    };
    reset(dir);
    let spec = if which & 1 == 0 {
        &tsimcne_data::cifar::CIFAR10
    } else {
        &tsimcne_data::cifar::CIFAR100
    };
    let path = dir.join("archive.tar.gz");
    write(&path, rest);
    tsimcne_data::cifar::read_cifar(spec, &path, false, &NoProgress)
        .map(drop)
        .map_err(|e| line(&e))
}

/// An image table: read whole, streamed without pixels, and as a vector
/// table (what `evaluate` does with an embedding).
pub fn image_table(data: &[u8], dir: &Path) -> Outcome {
    reset(dir);
    let path = dir.join("images.parquet");
    write(&path, data);
    let whole = tsimcne_format::read_image_table(&path).map(drop);
    let labels = tsimcne_format::ImageTableReader::open_labels(&path)
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map(drop);
    let vectors = tsimcne_format::vectors::read_vectors(&path, None).map(drop);
    whole.and(labels).map_err(|e| line(&e))?;
    // A valid image table has no float columns: only the error's form matters.
    vectors.or_else(|e| {
        let l = line(&e);
        if l.contains("no float vector column") {
            Ok(())
        } else {
            Err(l)
        }
    })
}

/// A model directory: bytes 0–1 (little-endian) are the length of
/// `config.json`, which follows, then `model.safetensors`. Loaded as a
/// directory (config, checks, weights) and as a bare file (architecture
/// from the shapes).
pub fn model(data: &[u8], dir: &Path) -> Outcome {
    if data.len() < 2 {
        return Ok(());
    }
    let n = (usize::from(data[0]) | usize::from(data[1]) << 8).min(data.len() - 2);
    let (config, weights) = data[2..].split_at(n);
    reset(dir);
    write(&dir.join("config.json"), config);
    let model_path = dir.join("model.safetensors");
    write(&model_path, weights);
    let as_dir = tsimcne_train::model_dir::load_model_dir(dir).map(drop);
    let bare = tsimcne_train::model_dir::load_model_file(&model_path).map(drop);
    as_dir.and(bare).map_err(|e| line(&e))
}
