//! Downloads an official archive, checking size and MD5 before it appears
//! under its final name.
//!
//! The transfer goes through the `curl` program (on every Linux
//! distribution, macOS and Windows 10 and later) rather than an HTTP and TLS
//! stack compiled into every binary: that stack was about 35 CPU-seconds of
//! each fresh build for one download per dataset (bench/build-timings.md).
//! The bytes are checked here as they stream in, whoever fetched them.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use md5::{Digest, Md5};
use tsimcne_format::FormatError;
use tsimcne_format::atomic::write_atomic;

use crate::checksum::hex;
use crate::error::{PrepError, Result};
use crate::progress::{Progress, Unit};

/// The program that fetches the bytes.
const CURL: &str = "curl";

/// Kills the transfer when the download is abandoned half-way (a wrong size,
/// a full disk), so that no `curl` outlives it.
struct Transfer(Child);

impl Drop for Transfer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let child = Command::new(CURL)
        // An HTTP error is an error; follow redirects over HTTP(S) only;
        // quiet, but say why it failed.
        .args(["--fail", "--location", "--proto", "=http,https"])
        .args(["--silent", "--show-error", "--retry", "3"])
        .args(["--connect-timeout", "60", "--"])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "needs the `{CURL}` program, which is not on PATH; \
                     install it, or fetch the file yourself and give its path to --input"
                )
            } else {
                format!("cannot start `{CURL}`: {e}")
            })
        })?;
    let mut transfer = Transfer(child);
    let mut body = transfer.0.stdout.take().expect("stdout is piped");
    let total = expect.map(|e| e.0);
    progress.begin("downloading", total, Unit::Bytes);
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
        let status = transfer.0.wait().map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            let mut why = String::new();
            if let Some(mut err) = transfer.0.stderr.take() {
                let _ = err.read_to_string(&mut why);
            }
            let why = why.lines().map(str::trim).rfind(|l| !l.is_empty());
            return Err(fail(why.map_or_else(
                || format!("`{CURL}` failed ({status})"),
                |w| w.trim_start_matches("curl: ").to_string(),
            )));
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
