//! Downloads an official archive, checking size and MD5 before it appears
//! under its final name.

use std::io::{Read, Write};
use std::path::Path;

use md5::{Digest, Md5};
use tsimcne_format::FormatError;
use tsimcne_format::atomic::write_atomic;

use crate::checksum::hex;
use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

/// Fetches `url` into `dest`. With `expect = Some((size, md5))` a download
/// of another size or checksum is refused and `dest` is left as it was.
pub fn download(
    url: &str,
    dest: &Path,
    expect: Option<(u64, &str)>,
    progress: &dyn Progress,
) -> Result<()> {
    let fail = |message: String| PrepError::Download {
        url: url.into(),
        message,
    };
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(t), Some((size, _))) = (total, expect)
        && t != size
    {
        return Err(fail(format!(
            "server announces {t} bytes, the official file has {size}"
        )));
    }
    let mut body = response.into_body().into_reader();
    progress.begin("downloading", total.or(expect.map(|e| e.0)), Unit::Bytes);
    write_atomic(dest, |out| -> Result<()> {
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = body.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if let Some((size, _)) = expect
                && got > size
            {
                return Err(fail(format!("more than the official {size} bytes")));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| FormatError::Io {
                path: dest.into(),
                source: e,
            })?;
            progress.advance(n as u64);
        }
        if let Some((size, md5)) = expect {
            if got != size {
                return Err(fail(format!(
                    "got {got} bytes, the official file has {size}"
                )));
            }
            let actual = hex(&hasher.finalize());
            if actual != md5 {
                return Err(fail(format!(
                    "md5 is {actual}, the official file has {md5}"
                )));
            }
        }
        Ok(())
    })?;
    progress.end();
    Ok(())
}
