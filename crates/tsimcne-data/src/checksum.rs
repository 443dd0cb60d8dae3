//! MD5 checksums of source files.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MD5 of a whole file, as lowercase hex.
pub fn md5_file(path: &Path, progress: &dyn Progress) -> Result<String> {
    let mut f = File::open(path).map_err(|e| PrepError::io(path, e))?;
    let total = f.metadata().map(|m| m.len()).ok();
    progress.begin("checksum", total, Unit::Bytes);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| PrepError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress.advance(n as u64);
    }
    progress.end();
    Ok(hex(&h.finalize()))
}

pub fn md5_bytes(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Checksum of several files: the MD5 of their `md5sum`-style listing
/// (`<hex>  <name>\n`, sorted by name), so `md5sum FILES | md5sum` agrees.
pub fn listing_checksum(mut entries: Vec<(String, String)>) -> String {
    entries.sort();
    let listing: String = entries
        .iter()
        .map(|(name, md5)| format!("{md5}  {name}\n"))
        .collect();
    format!("md5:{}", md5_bytes(listing.as_bytes()))
}

/// Checks a file's size and MD5 against the official values.
pub fn verify_file(path: &Path, size: u64, md5: &str, progress: &dyn Progress) -> Result<String> {
    let actual = std::fs::metadata(path)
        .map_err(|e| PrepError::io(path, e))?
        .len();
    if actual != size {
        return Err(PrepError::Size {
            path: path.into(),
            expected: size,
            actual,
        });
    }
    let got = md5_file(path, progress)?;
    if got != md5 {
        return Err(PrepError::Checksum {
            path: path.into(),
            expected: md5.into(),
            actual: got,
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(md5_bytes(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_bytes(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn listing_is_order_independent() {
        let a = listing_checksum(vec![("b".into(), "2".into()), ("a".into(), "1".into())]);
        let b = listing_checksum(vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(a, b);
        assert_eq!(a, format!("md5:{}", md5_bytes(b"1  a\n2  b\n")));
    }
}
