//! `prep`'s flags.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use tsimcne_data::{Duplicates, Fit, FolderOptions, PrepConfig, Source, Unreadable};

use crate::default_threads;

/// Turn a dataset into an image table: one Parquet row per image with its id,
/// split, label and raw HWC pixels.
///
/// Sources: cifar10/cifar100 (official binary .tar.gz or extracted directory),
/// mnist/fashion-mnist (directory of the IDX files, gzipped or not), folder
/// (PNG, JPEG, WebP, TIFF, BMP, GIF; one subfolder per class or a flat folder).
#[derive(Debug, Parser)]
#[command(name = "prep", version, about, long_about)]
pub struct Args {
    /// The dataset to read.
    #[arg(value_enum)]
    source: Source,
    /// The image table to write (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Archive, IDX directory or image folder. Defaults: cifar10 and cifar100:
    /// data/<official archive name>; fashion-mnist:
    /// /usr/share/datasets/fashion-mnist when it exists.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Download the official archive to --input first if it is not there (CIFAR only;
    /// through the `curl` program, size and MD5 checked before it is kept).
    #[arg(long)]
    download: bool,
    /// Download from this URL instead of the official one (a mirror).
    #[arg(long, requires = "download")]
    url: Option<String>,
    /// Skip the official size and MD5 check (for a custom CIFAR-layout archive).
    #[arg(long)]
    no_verify: bool,
    /// Keep a stratified random subset of this many images (by split and label).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Seed of the --limit subset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Resize every image to SIZE (N or HxW, e.g. 32 or 28x32); whole-factor
    /// downscales average each block (e.g. 28 to 14: 2x2 blocks), others
    /// resample bilinearly. Any source (needed by folders of mixed sizes).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Folder: channels to store, 1 (grey) or 3 (RGB). Default: 1 when every
    /// image is greyscale, else 3.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    channels: Option<u32>,
    /// How --size treats a different aspect ratio.
    #[arg(long, value_enum, default_value_t = Fit::Crop)]
    fit: Fit,
    /// Worker threads for decoding images [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Folder: leave out every file that cannot be decoded exactly (cut
    /// short, corrupt, not an image) instead of stopping at the first, and
    /// list them with the reasons in OUT.skipped.csv beside the table
    /// (path,reason; paths relative to --input).
    #[arg(long)]
    skip_unreadable: bool,
    /// Folder: keep only the first of each set of files with the same bytes
    /// (exact duplicates are always counted and listed in
    /// OUT.duplicates.csv: path,duplicate_of).
    #[arg(long)]
    dedupe: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let num = |t: &str| t.trim().parse::<u32>().ok().filter(|&v| v > 0);
    let parsed = match s.split_once(['x', 'X']) {
        Some((h, w)) => num(h).zip(num(w)),
        None => num(s).map(|v| (v, v)),
    };
    parsed.ok_or_else(|| format!("{s:?} is not a size like 32 or 28x32"))
}

impl Args {
    /// The library's config, checked.
    pub fn config(self) -> anyhow::Result<PrepConfig> {
        let source = self.source;
        if self.download && source.cifar_spec().is_none() {
            bail!("--download is only for cifar10 and cifar100");
        }
        if self.channels == Some(2) {
            bail!("--channels must be 1 or 3");
        }
        let input = match self.input {
            Some(p) => p,
            None => tsimcne_data::default_input(source, |p| p.is_dir())
                .with_context(|| format!("{} needs --input PATH", source.name()))?,
        };
        let official = || source.cifar_spec().map(|s| s.url.to_string());
        Ok(PrepConfig {
            source,
            input,
            out: self.out,
            verify: !self.no_verify,
            download: if self.download {
                self.url.or_else(official)
            } else {
                None
            },
            limit: self.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            seed: self.seed,
            folder: FolderOptions {
                size: self.size,
                channels: self.channels,
                fit: self.fit,
                threads: self.threads.unwrap_or_else(default_threads).max(1),
                unreadable: if self.skip_unreadable {
                    Unreadable::Skip
                } else {
                    Unreadable::Stop
                },
                duplicates: if self.dedupe {
                    Duplicates::Drop
                } else {
                    Duplicates::Keep
                },
            },
        })
    }
}
