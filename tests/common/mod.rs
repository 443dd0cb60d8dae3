//! Helpers shared by the end-to-end tests: run the real binaries, and build
//! small datasets in the official layouts.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use flate2::Compression;
use flate2::write::GzEncoder;

/// The result of running a stage binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts the run failed the way a user error must: exit 1, one
    /// `error:` line naming `file` and containing every phrase, no panic.
    pub fn assert_user_error(&self, file: &str, phrases: &[&str]) {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1, stderr: {}",
            self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            // Per-epoch progress lines of a training stage may precede it.
            .filter(|l| !l.trim().is_empty() && !l.starts_with("epoch "))
            .collect();
        assert_eq!(lines.len(), 1, "expected one line, got: {}", self.stderr);
        let line = lines[0];
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains(file), "{line:?} does not name {file:?}");
        for p in phrases {
            assert!(line.contains(p), "{line:?} does not say {p:?}");
        }
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{}",
            self.stderr
        );
    }
}

/// `pretrain`'s flags for a quick run of the tiny network on `images`
/// (batch 16, no warm-up, 2 threads, seed 4) into `out`.
pub fn tiny_pretrain_args<'a>(images: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "--images",
        s(images),
        "--out",
        s(out),
        "--backbone",
        "tiny",
        "--epochs",
        epochs,
        "--batch-size",
        "16",
        "--warmup",
        "0",
        "--threads",
        "2",
        "--seed",
        "4",
    ]
}

/// `args` with each flag of `flags` set to its value: the value after the
/// flag replaced where `args` has it, the pair appended where not.
pub fn with_flags<'a>(mut args: Vec<&'a str>, flags: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    for &(flag, value) in flags {
        match args.iter().position(|a| *a == flag) {
            Some(i) => args[i + 1] = value,
            None => args.extend([flag, value]),
        }
    }
    args
}

/// Runs stage `bin` and asserts it succeeded.
pub fn ok(bin: &str, args: &[&str]) {
    let r = run(bin, args);
    assert!(r.ok(), "{bin} {args:?}: {}", r.stderr);
}

/// The path of stage `name`: a link named after it to the `tsimcne`
/// executable, beside it, made by `tsimcne --link-stages` as `make build`
/// makes them, so the tests call the stages the way users do.
pub fn stage(name: &str) -> PathBuf {
    static LINKED: OnceLock<()> = OnceLock::new();
    let exe = Path::new(env!("CARGO_BIN_EXE_tsimcne"));
    let dir = exe.parent().expect("the executable's folder");
    LINKED.get_or_init(|| {
        let out = Command::new(exe)
            .arg("--link-stages")
            .arg(dir)
            .output()
            .expect("tsimcne runs");
        assert!(
            out.status.success(),
            "tsimcne --link-stages: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    dir.join(name)
}

/// Runs stage `name` (see [`stage`]) with `args`; any other name is a
/// program on the `PATH` (`python3`).
pub fn run(name: &str, args: &[&str]) -> Run {
    let program = if tsimcne_cli::stages::stage(name).is_some() {
        stage(name)
    } else {
        PathBuf::from(name)
    };
    let out: Output = Command::new(program)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether python3 imports `modules` (e.g. `"pyarrow, pandas, numpy"`).
/// CI installs them and sets TSIMCNE_REQUIRE_PYARROW=1, which makes a
/// missing one fail; elsewhere it is a note that `what` was skipped.
pub fn python_imports(modules: &str, what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("TSIMCNE_REQUIRE_PYARROW").is_none(),
            "python3 with {modules} is required"
        );
        eprintln!("skipping {what}: python3 cannot import {modules}");
    }
    ok
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The top of the repository (tests read `data/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A stratified `n`-image subset of the embedded Fashion-MNIST test set,
/// written by `prep` to `out`.
pub fn embedded_subset(out: &Path, n: usize) {
    let data = repo_root().join("data/fashion-mnist");
    let n = n.to_string();
    let r = run(
        "prep",
        &[
            "fashion-mnist",
            "--input",
            s(&data),
            "--limit",
            &n,
            "--out",
            s(out),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
}

/// One tar member: a name (written raw, so `../x` is possible) and its bytes.
pub struct Member<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// A tar archive, gzipped when `gz`, with raw member names.
pub fn tar_bytes(members: &[Member<'_>], gz: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            name.fill(0);
            name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        }
        h.set_size(m.data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, m.data).expect("append");
    }
    let tar = b.into_inner().expect("finish tar");
    if gz {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(&tar).expect("gzip");
        e.finish().expect("gzip")
    } else {
        tar
    }
}

/// The pixel the generated CIFAR record `r` of member `m` has at plane `c`,
/// position `p`: distinct per record, channel and position.
pub fn cifar_pixel(m: usize, r: usize, c: usize, p: usize) -> u8 {
    ((m * 31 + r * 7 + c * 85 + p) % 256) as u8
}

pub fn cifar10_label(m: usize, r: usize) -> u8 {
    ((m * 3 + r) % 10) as u8
}

pub fn cifar100_labels(r: usize) -> (u8, u8) {
    ((r % 20) as u8, ((r * 13) % 100) as u8)
}

fn cifar_record(labels: &[u8], m: usize, r: usize) -> Vec<u8> {
    let mut rec = labels.to_vec();
    for c in 0..3 {
        rec.extend((0..1024).map(|p| cifar_pixel(m, r, c, p)));
    }
    rec
}

pub const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The members of a CIFAR-10 archive with `per` records per batch.
pub fn cifar10_members(per: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let batches = [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ];
    for (m, b) in batches.iter().enumerate() {
        let data: Vec<u8> = (0..per)
            .flat_map(|r| cifar_record(&[cifar10_label(m, r)], m, r))
            .collect();
        out.push((format!("cifar-10-batches-bin/{b}.bin"), data));
    }
    out.push((
        "cifar-10-batches-bin/batches.meta.txt".into(),
        (CIFAR10_NAMES.join("\n") + "\n\n").into_bytes(),
    ));
    out.push((
        "cifar-10-batches-bin/readme.html".into(),
        b"<html></html>".to_vec(),
    ));
    out
}

/// The members of a CIFAR-100 archive with `train` and `test` records.
pub fn cifar100_members(train: usize, test: usize) -> Vec<(String, Vec<u8>)> {
    let recs = |m: usize, n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|r| {
                let (c, f) = cifar100_labels(r);
                cifar_record(&[c, f], m, r)
            })
            .collect()
    };
    let fine: Vec<String> = (0..100).map(|i| format!("fine_{i}")).collect();
    let coarse: Vec<String> = (0..20).map(|i| format!("coarse_{i}")).collect();
    vec![
        ("cifar-100-binary/train.bin".into(), recs(0, train)),
        ("cifar-100-binary/test.bin".into(), recs(1, test)),
        (
            "cifar-100-binary/fine_label_names.txt".into(),
            fine.join("\n").into_bytes(),
        ),
        (
            "cifar-100-binary/coarse_label_names.txt".into(),
            coarse.join("\n").into_bytes(),
        ),
    ]
}

pub fn write_tar(path: &Path, members: &[(String, Vec<u8>)], gz: bool) {
    let m: Vec<Member<'_>> = members
        .iter()
        .map(|(n, d)| Member { name: n, data: d })
        .collect();
    std::fs::write(path, tar_bytes(&m, gz)).expect("write archive");
}

/// Writes the members as an extracted directory under `dir`.
pub fn write_extracted(dir: &Path, members: &[(String, Vec<u8>)]) {
    for (name, data) in members {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("member has a folder")).expect("mkdir");
        std::fs::write(p, data).expect("write member");
    }
}

/// An IDX file: big-endian magic and dimensions, then the data.
pub fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// Writes an MNIST-style split (`train` or `t10k`) of `n` r×c images into `dir`.
pub fn write_idx_split(dir: &Path, prefix: &str, n: usize, rows: u32, cols: u32, gz: bool) {
    let px: Vec<u8> = (0..n * (rows * cols) as usize)
        .map(|i| (i % 253) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = idx_bytes(0x803, &[n as u32, rows, cols], &px);
    let labs = idx_bytes(0x801, &[n as u32], &labels);
    let (images, labs, ext) = if gz {
        (gzip(&images), gzip(&labs), ".gz")
    } else {
        (images, labs, "")
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).expect("write");
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labs).expect("write");
}

/// Saves an RGB image whose pixel (x, y) is `f(x, y)`; format from the extension.
pub fn save_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)))
        .save(path)
        .expect("save image");
}

pub fn save_grey(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .expect("save image");
}
