//! CIFAR-10 and CIFAR-100 in their official binary layout, read straight from
//! the `.tar.gz` stream (or from an extracted directory).
//!
//! **Invariant:** nothing is ever extracted to disk. Only the expected member
//! names are read, each into memory after its header size has been checked
//! against the largest official size; a member with an absolute or `..` path
//! is refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tsimcne_format::{ImageMeta, ImageSet, Split};

use crate::checksum::{listing_checksum, md5_bytes, md5_file, verify_file};
use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

/// Everything that differs between CIFAR-10 and CIFAR-100.
#[derive(Debug)]
pub struct CifarSpec {
    /// `tsimcne.source` value.
    pub source: &'static str,
    pub archive_name: &'static str,
    pub url: &'static str,
    pub md5: &'static str,
    pub size: u64,
    /// The directory inside the archive.
    pub dir: &'static str,
    /// Label bytes before the 3,072 pixel bytes of a record (coarse first).
    pub label_bytes: usize,
    pub train: &'static [&'static str],
    pub test: &'static [&'static str],
    /// Records in one official member; the upper bound on a member's size.
    pub max_records: usize,
    /// Records of the official archive: (train, test).
    pub records: (usize, usize),
    /// (file, number of classes) for the fine labels.
    pub names: (&'static str, usize),
    /// (file, number of classes) for the coarse labels, CIFAR-100 only.
    pub coarse_names: Option<(&'static str, usize)>,
}

pub const CIFAR10: CifarSpec = CifarSpec {
    source: "cifar10",
    archive_name: "cifar-10-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
    size: 170_052_171,
    dir: "cifar-10-batches-bin",
    label_bytes: 1,
    train: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test: &["test_batch.bin"],
    max_records: 10_000,
    records: (50_000, 10_000),
    names: ("batches.meta.txt", 10),
    coarse_names: None,
};

pub const CIFAR100: CifarSpec = CifarSpec {
    source: "cifar100",
    archive_name: "cifar-100-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
    size: 168_513_733,
    dir: "cifar-100-binary",
    label_bytes: 2,
    train: &["train.bin"],
    test: &["test.bin"],
    max_records: 50_000,
    records: (50_000, 10_000),
    names: ("fine_label_names.txt", 100),
    coarse_names: Some(("coarse_label_names.txt", 20)),
};

const PIXELS: usize = 32 * 32 * 3;
const MAX_NAMES_BYTES: u64 = 1 << 16;

impl CifarSpec {
    pub fn record_len(&self) -> usize {
        self.label_bytes + PIXELS
    }

    fn members(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.train
            .iter()
            .chain(self.test)
            .copied()
            .chain(std::iter::once(self.names.0))
            .chain(self.coarse_names.map(|c| c.0))
    }

    /// The largest size a member may have.
    fn max_member_len(&self, member: &str) -> u64 {
        if member.ends_with(".txt") {
            MAX_NAMES_BYTES
        } else {
            (self.max_records * self.record_len()) as u64
        }
    }
}

/// Reads a CIFAR archive (`.tar.gz` or `.tar`) or extracted directory.
///
/// With `verify`, an archive must have the official size and MD5.
pub fn read_cifar(
    spec: &CifarSpec,
    input: &Path,
    verify: bool,
    progress: &dyn Progress,
) -> Result<ImageSet> {
    let meta = std::fs::metadata(input).map_err(|e| PrepError::io(input, e))?;
    let (members, checksum) = if meta.is_dir() {
        read_dir_members(spec, input)?
    } else {
        let md5 = if verify {
            verify_file(input, spec.size, spec.md5, progress)?
        } else {
            md5_file(input, progress)?
        };
        (
            read_archive_members(spec, input, progress)?,
            format!("md5:{md5}"),
        )
    };
    decode(spec, input, &members, checksum)
}

/// Follows reads so the progress bar can count compressed bytes.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

fn read_archive_members(
    spec: &CifarSpec,
    path: &Path,
    progress: &dyn Progress,
) -> Result<HashMap<&'static str, Vec<u8>>> {
    let mut file = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|e| PrepError::io(path, e))?,
    );
    let total = std::fs::metadata(path).map(|m| m.len()).ok();
    let gz = io::BufRead::fill_buf(&mut file)
        .map_err(|e| PrepError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    progress.begin("reading archive", total, Unit::Bytes);
    let counted = Counting {
        inner: file,
        progress,
    };
    let stream: Box<dyn Read + '_> = if gz {
        Box::new(GzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    let mut archive = tar::Archive::new(stream);
    let mut members: HashMap<&'static str, Vec<u8>> = HashMap::new();
    let corrupt = |e: io::Error| PrepError::corrupt(path, e);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = checked_member_name(path, &raw)?;
        let Some(member) = spec
            .members()
            .find(|m| name == format!("{}/{m}", spec.dir) || name == *m)
        else {
            continue; // e.g. the official readme.html
        };
        if !entry.header().entry_type().is_file() {
            return Err(PrepError::BadMember {
                path: path.into(),
                member: raw,
                why: "not a regular file",
            });
        }
        if members.contains_key(member) {
            return Err(PrepError::BadMember {
                path: path.into(),
                member: raw,
                why: "it appears twice",
            });
        }
        let size = entry.header().size().map_err(corrupt)?;
        let max = spec.max_member_len(member);
        if size > max {
            return Err(PrepError::corrupt(
                path,
                format!("member {raw} claims {size} bytes, more than the official {max}"),
            ));
        }
        // The header's size is a claim: reserve no more than the archive
        // holds (a .tar cannot hold more; a .tar.gz grows as it inflates).
        let mut data = Vec::with_capacity(size.min(total.unwrap_or(0)) as usize);
        entry.read_to_end(&mut data).map_err(corrupt)?;
        if data.len() as u64 != size {
            return Err(PrepError::corrupt(
                path,
                format!("member {raw} ends after {} of {size} bytes", data.len()),
            ));
        }
        members.insert(member, data);
    }
    // Read to the end of the stream so gzip checks its CRC and length trailer.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(corrupt)?;
    progress.end();
    check_complete(spec, path, &members)?;
    Ok(members)
}

/// Refuses absolute and `..` member paths; returns the name without `./`.
fn checked_member_name(path: &Path, raw: &str) -> Result<String> {
    let p = Path::new(raw);
    let bad = p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if bad {
        return Err(PrepError::BadMember {
            path: path.into(),
            member: raw.into(),
            why: "absolute or parent-directory path",
        });
    }
    let parts: Vec<_> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Ok(parts.join("/"))
}

fn check_complete(
    spec: &CifarSpec,
    path: &Path,
    members: &HashMap<&'static str, Vec<u8>>,
) -> Result<()> {
    let missing: Vec<String> = spec
        .members()
        .filter(|m| !members.contains_key(m))
        .map(|m| format!("{}/{m}", spec.dir))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrepError::Missing {
            path: path.into(),
            missing,
        })
    }
}

fn read_dir_members(
    spec: &CifarSpec,
    input: &Path,
) -> Result<(HashMap<&'static str, Vec<u8>>, String)> {
    let inner = input.join(spec.dir);
    let dir: PathBuf = if inner.is_dir() {
        inner
    } else {
        input.to_path_buf()
    };
    let mut members = HashMap::new();
    let mut sums = Vec::new();
    for m in spec.members() {
        let p = dir.join(m);
        let Ok(f) = File::open(&p) else { continue };
        let max = spec.max_member_len(m);
        let mut data = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut data)
            .map_err(|e| PrepError::io(&p, e))?;
        if data.len() as u64 > max {
            return Err(PrepError::corrupt(
                &p,
                format!("more than the official {max} bytes"),
            ));
        }
        sums.push((m.to_string(), md5_bytes(&data)));
        members.insert(m, data);
    }
    check_complete(spec, &dir, &members)?;
    Ok((members, listing_checksum(sums)))
}

fn parse_names(path: &Path, member: &str, data: &[u8], expected: usize) -> Result<Vec<String>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| PrepError::corrupt(path, format!("{member} is not text")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(PrepError::corrupt(
            path,
            format!(
                "{member} lists {} class names, expected {expected}",
                names.len()
            ),
        ));
    }
    Ok(names)
}

fn decode(
    spec: &CifarSpec,
    path: &Path,
    members: &HashMap<&'static str, Vec<u8>>,
    checksum: String,
) -> Result<ImageSet> {
    let class_names = parse_names(path, spec.names.0, &members[spec.names.0], spec.names.1)?;
    let coarse_class_names = match spec.coarse_names {
        Some((m, n)) => Some(parse_names(path, m, &members[m], n)?),
        None => None,
    };
    let rec = spec.record_len();
    let mut total = 0;
    for m in spec.train.iter().chain(spec.test) {
        let len = members[m].len();
        if len == 0 || !len.is_multiple_of(rec) {
            return Err(PrepError::corrupt(
                path,
                format!("member {m} has {len} bytes, not a whole number of {rec}-byte records"),
            ));
        }
        total += len / rec;
    }
    let mut set = ImageSet {
        meta: ImageMeta {
            height: 32,
            width: 32,
            channels: 3,
            class_names,
            coarse_class_names,
            source: spec.source.into(),
            source_checksum: checksum,
            subset: None,
        },
        splits: Vec::with_capacity(total),
        labels: Vec::with_capacity(total),
        coarse_labels: Vec::new(),
        pixels: vec![0; total * PIXELS],
        paths: Vec::new(),
    };
    let fine_classes = spec.names.1 as u8;
    let mut i = 0;
    let parts = spec
        .train
        .iter()
        .map(|m| (m, Split::Train))
        .chain(spec.test.iter().map(|m| (m, Split::Test)));
    for (m, split) in parts {
        for (r, record) in members[m].chunks_exact(rec).enumerate() {
            let (labels, planes) = record.split_at(spec.label_bytes);
            let fine = labels[spec.label_bytes - 1];
            if fine >= fine_classes {
                return Err(PrepError::corrupt(
                    path,
                    format!("{m} record {r}: label {fine} is not below {fine_classes}"),
                ));
            }
            if let Some((_, n)) = spec.coarse_names {
                if labels[0] as usize >= n {
                    return Err(PrepError::corrupt(
                        path,
                        format!(
                            "{m} record {r}: coarse label {} is not below {n}",
                            labels[0]
                        ),
                    ));
                }
                set.coarse_labels.push(Some(i32::from(labels[0])));
            }
            set.splits.push(split);
            set.labels.push(Some(i32::from(fine)));
            planes_to_hwc(planes, &mut set.pixels[i * PIXELS..(i + 1) * PIXELS]);
            i += 1;
        }
    }
    Ok(set)
}

/// CIFAR stores 1,024 red, then green, then blue bytes; we store HWC.
fn planes_to_hwc(planes: &[u8], out: &mut [u8]) {
    let (r, rest) = planes.split_at(1024);
    let (g, b) = rest.split_at(1024);
    for (p, px) in out.chunks_exact_mut(3).enumerate() {
        px[0] = r[p];
        px[1] = g[p];
        px[2] = b[p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_become_hwc() {
        let planes: Vec<u8> = (0..PIXELS)
            .map(|i| (i / 1024 * 100 + i % 1024 % 7) as u8)
            .collect();
        let mut out = vec![0; PIXELS];
        planes_to_hwc(&planes, &mut out);
        assert_eq!(&out[..6], &[0, 100, 200, 1, 101, 201]);
    }

    #[test]
    fn traversal_names_are_refused() {
        let p = Path::new("a.tar");
        for bad in ["../x", "/etc/passwd", "cifar-10-batches-bin/../../x"] {
            assert!(checked_member_name(p, bad).is_err(), "{bad}");
        }
        assert_eq!(checked_member_name(p, "./a/b.bin").unwrap(), "a/b.bin");
    }
}
