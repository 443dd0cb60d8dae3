//! Every reader, cut and flipped: each valid input of `tests/corpus/good/`
//! (and the image-format fixtures) is cut at many offsets (every byte of
//! its header, each record or member boundary ±1, evenly spaced points,
//! the last bytes) and has single bytes flipped where a reader can tell:
//! anywhere in a format with a checksum (gzip, PNG) and in config.json, in
//! the headers of IDX, tar and safetensors files; and is given to the
//! stage that reads it. Each
//! case must end one of two ways: the output of the intact input, byte for
//! byte; or one `error:` line naming the file, exit code 1, and no output.
//! A shorter dataset is never produced without a word.
//!
//! The training checkpoint is cut and flipped everywhere too: it carries a
//! CRC-32 of its tensors, so a changed weight is an error, never a resume
//! from other weights (`the_checkpoint_cut_and_flipped`).
//!
//! Not here: flips in formats without a checksum (raw IDX, TIFF, BMP and
//! JPEG pixels, Parquet pages, a model's safetensors data), which change a
//! value that no reader can tell from a real one.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;

/// One reader and its input: `file` is mutated in place inside `work`, and
/// `args` (with `{work}` and `{out}` filled in) reads it and writes `out`.
struct Case {
    name: String,
    file: PathBuf,
    stage: &'static str,
    args: Vec<String>,
    out: PathBuf,
    /// Offsets that matter to the format (record or member boundaries).
    boundaries: Vec<usize>,
    /// Which bytes to flip.
    flips: Flips,
}

/// Where a case's bytes are flipped: where a reader can tell.
enum Flips {
    None,
    /// The format carries a checksum (gzip, PNG) or is text whose every
    /// byte is structure or a checked value (config.json): the first 24
    /// bytes and seeded positions anywhere ([`flips`]).
    Anywhere,
    /// Only these offsets: the headers of a format whose payload has no
    /// checksum (IDX dimensions, tar headers with their checksum, a
    /// safetensors header).
    At(Vec<usize>),
}

/// The output of a run, or `None` after checking it failed cleanly.
fn outcome(case: &Case, what: &str) -> Option<Vec<u8>> {
    let _ = std::fs::remove_file(&case.out);
    let _ = std::fs::remove_dir_all(&case.out);
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    let r = run(case.stage, &args);
    if r.ok() {
        return Some(read_output(&case.out));
    }
    let file = case
        .file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        r.code == Some(1) && lines.len() == 1 && lines[0].starts_with("error: "),
        "{}, {what}: not one clean error line (exit {:?}): {}",
        case.name,
        r.code,
        r.stderr
    );
    assert!(
        lines[0].contains(&file),
        "{}, {what}: the error does not name {file}: {}",
        case.name,
        lines[0]
    );
    assert!(
        !case.out.exists(),
        "{}, {what}: a failed run wrote {}",
        case.name,
        case.out.display()
    );
    None
}

/// A file's bytes, or a folder's files' bytes with their names; for
/// metrics.json without its `seconds`.
fn read_output(out: &Path) -> Vec<u8> {
    if out.is_dir() {
        let mut all = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            all.extend(p.file_name().unwrap().as_encoded_bytes());
            all.extend(read_output(&p));
        }
        return all;
    }
    // An image table: its content, not its `tsimcne.source_checksum` (an
    // MD5 of the input's bytes, which a flip in a gzip header's time
    // stamp changes along with nothing else).
    if let Ok(set) = tsimcne_format::read_image_table(out) {
        let m = &set.meta;
        let paths: Vec<&str> = set.paths.iter().map(|p| p.text.as_str()).collect();
        return format!(
            "{}x{}x{} {:?} {:?} {:?} {:?} {:?} {:?}",
            m.height,
            m.width,
            m.channels,
            m.class_names,
            set.labels,
            set.coarse_labels,
            set.splits,
            paths,
            set.pixels
        )
        .into_bytes();
    }
    let bytes = std::fs::read(out).unwrap();
    if out.file_name().is_some_and(|n| n == "metrics.json") {
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        return serde_json::to_vec(&v).unwrap();
    }
    bytes
}

/// The offsets a file of `len` bytes is cut at.
fn cuts(len: usize, boundaries: &[usize]) -> BTreeSet<usize> {
    let mut at: BTreeSet<usize> = (0..len.min(40)).collect();
    at.extend((1..40).map(|k| k * len / 40));
    at.extend(len.saturating_sub(8)..len);
    for &b in boundaries {
        at.extend([b.saturating_sub(1), b, b + 1]);
    }
    at.retain(|&k| k < len);
    at
}

/// Runs every cut and flip of one case; returns how many it ran.
fn check(case: &Case) -> usize {
    let intact = std::fs::read(&case.file).unwrap();
    let want =
        outcome(case, "intact").unwrap_or_else(|| panic!("{}: the intact input fails", case.name));
    let mut n = 0;
    for k in cuts(intact.len(), &case.boundaries) {
        std::fs::write(&case.file, &intact[..k]).unwrap();
        if let Some(got) = outcome(case, &format!("cut at {k} of {}", intact.len())) {
            assert!(
                got == want,
                "{}: cut at {k} of {} gave other output",
                case.name,
                intact.len()
            );
        }
        n += 1;
    }
    let at = match &case.flips {
        Flips::None => BTreeSet::new(),
        Flips::Anywhere => flips(intact.len()),
        Flips::At(at) => at.iter().copied().collect(),
    };
    for i in at.into_iter().filter(|&i| i < intact.len()) {
        let mut bytes = intact.clone();
        bytes[i] ^= 0x5a;
        std::fs::write(&case.file, &bytes).unwrap();
        if let Some(got) = outcome(case, &format!("byte {i} flipped")) {
            assert!(
                got == want,
                "{}: byte {i} flipped gave other output",
                case.name
            );
        }
        n += 1;
    }
    std::fs::write(&case.file, &intact).unwrap();
    n
}

/// The bytes a file of `len` bytes has flipped: every one of the first 24
/// (the headers) and seeded positions over the whole file, 60 in all.
fn flips(len: usize) -> BTreeSet<usize> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut at: BTreeSet<usize> = (0..len.min(24)).collect();
    while at.len() < 60.min(len) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        at.insert(state as usize % len);
    }
    at
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_reader_cut_and_flipped() {
    let start = std::time::Instant::now();
    let good = repo_root().join("tests/corpus/good");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let mut cases = Vec::new();

    // IDX: raw images (header 16 bytes, then 784-byte records), gzipped labels.
    copy_dir(&good.join("idx"), &w.join("idx"));
    for (file, boundaries, flips) in [
        (
            "t10k-images-idx3-ubyte",
            (0..=2).map(|r| 16 + 784 * r).collect(),
            // The magic number and the dimensions.
            Flips::At((0..16).collect()),
        ),
        ("t10k-labels-idx1-ubyte.gz", vec![10], Flips::Anywhere),
    ] {
        cases.push(Case {
            name: file.to_string(),
            file: w.join("idx").join(file),
            stage: "prep",
            args: strings(&[
                "fashion-mnist",
                "--input",
                s(&w.join("idx")),
                "--out",
                s(&w.join("idx.parquet")),
            ]),
            out: w.join("idx.parquet"),
            boundaries,
            flips,
        });
    }
    // CIFAR-10: the .tar.gz, and the same archive as a plain .tar (members
    // of a 512-byte header and one 3,073-byte record each).
    std::fs::copy(good.join("cifar10.tar.gz"), w.join("c.tar.gz")).unwrap();
    let tar = {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(good.join("cifar10.tar.gz")).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    std::fs::write(w.join("c.tar"), &tar).unwrap();
    // Each member's header and data offsets, and its data's end.
    let members: Vec<usize> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .flat_map(|e| {
            let e = e.unwrap();
            let data = e.raw_file_position() as usize;
            [
                e.raw_header_position() as usize,
                data,
                data + e.size() as usize,
            ]
        })
        .collect();
    assert_eq!(members.len(), 24);
    // Every 8th byte of each member's header (checksummed), its checksum
    // field whole.
    let headers: Vec<usize> = members
        .chunks(3)
        .flat_map(|m| (0..512).step_by(8).chain(148..156).map(move |i| m[0] + i))
        .collect();
    for (file, boundaries, flips) in [
        ("c.tar.gz", vec![10], Flips::Anywhere),
        ("c.tar", members, Flips::At(headers)),
    ] {
        let out = w.join(format!("{file}.parquet"));
        cases.push(Case {
            name: file.to_string(),
            file: w.join(file),
            stage: "prep",
            args: strings(&[
                "cifar10",
                "--input",
                s(&w.join(file)),
                "--no-verify",
                "--out",
                s(&out),
            ]),
            out,
            boundaries,
            flips,
        });
    }
    // Image folders: PNG (CRC-checked: flips too), JPEG, and every further
    // format's fixture.
    let formats = repo_root().join("tests/golden/formats");
    let mut images: Vec<(PathBuf, bool)> = vec![(good.join("folder/a.png"), true)];
    save_rgb(&w.join("made/x.jpg"), 16, 16, |x, y| {
        [(x * 15) as u8, (y * 15) as u8, 90]
    });
    images.push((w.join("made/x.jpg"), false));
    for e in std::fs::read_dir(&formats).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".expected.png") {
            images.push((p, false));
        }
    }
    images.sort();
    for (i, (src, flips)) in images.iter().enumerate() {
        let folder = w.join(format!("folder{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(src, folder.join(&name)).unwrap();
        let out = w.join(format!("folder{i}.parquet"));
        cases.push(Case {
            name: name.clone(),
            file: folder.join(src.file_name().unwrap()),
            stage: "prep",
            args: strings(&[
                "folder",
                "--input",
                s(&folder),
                "--out",
                s(&out),
                "--channels",
                "3",
            ]),
            out,
            boundaries: vec![],
            flips: if *flips { Flips::Anywhere } else { Flips::None },
        });
    }
    // The image table, read by embed; the model directory's two files.
    copy_dir(&good.join("model"), &w.join("model"));
    std::fs::copy(good.join("images.parquet"), w.join("images.parquet")).unwrap();
    let embed_args = strings(&[
        "--model",
        s(&w.join("model")),
        "--images",
        s(&w.join("images.parquet")),
        "--out",
        s(&w.join("e.parquet")),
    ]);
    let header_end = {
        let bytes = std::fs::read(w.join("model/model.safetensors")).unwrap();
        8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
    };
    for (name, file, boundaries, flips) in [
        (
            "images.parquet",
            w.join("images.parquet"),
            vec![],
            Flips::None,
        ),
        (
            "model.safetensors",
            w.join("model/model.safetensors"),
            vec![8, header_end],
            // The length and the JSON header (names, dtypes, shapes,
            // offsets), every 5th byte.
            Flips::At((0..8).chain((8..header_end).step_by(5)).collect()),
        ),
        (
            "config.json",
            w.join("model/config.json"),
            vec![],
            Flips::Anywhere,
        ),
    ] {
        cases.push(Case {
            name: name.to_string(),
            file,
            stage: "embed",
            args: embed_args.clone(),
            out: w.join("e.parquet"),
            boundaries,
            flips,
        });
    }
    // A vector table (the embedding embed wrote), read by evaluate.
    let r = run(
        "embed",
        &embed_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(r.ok(), "{}", r.stderr);
    std::fs::rename(w.join("e.parquet"), w.join("map.parquet")).unwrap();
    cases.push(Case {
        name: "map.parquet".to_string(),
        file: w.join("map.parquet"),
        stage: "evaluate",
        args: strings(&[
            "--embedding",
            s(&w.join("map.parquet")),
            "--images",
            s(&w.join("images.parquet")),
            "--k",
            "1",
            "--repeats",
            "1",
            "--no-plot",
            "--out",
            s(&w.join("ev")),
        ]),
        out: w.join("ev"),
        boundaries: vec![],
        flips: Flips::None,
    });

    let mut total = 0;
    for case in &cases {
        total += check(case);
    }
    eprintln!(
        "{total} cut and flipped inputs over {} readers in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(total > 1000, "{total} cases");
}

/// The training checkpoint, cut and flipped: a finished pretraining's
/// `checkpoint.safetensors` with the stage's outputs removed, so the same
/// command resumes from it and writes them again. Each case must give the
/// intact run's model and features byte for byte, or stop with one error
/// line naming the checkpoint and write neither.
#[test]
fn the_checkpoint_cut_and_flipped() {
    let start = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let images = w.join("images.parquet");
    embedded_subset(&images, 48);
    let out = w.join("pretrain");
    let args = tiny_pretrain_args(&images, &out, "2");
    let r = run("pretrain", &args);
    assert!(r.ok(), "{}", r.stderr);
    let outputs = ["model.safetensors", "features.parquet"];
    let read_outputs = || outputs.map(|f| std::fs::read(out.join(f)).unwrap());
    let want = read_outputs();
    let ckpt = out.join("checkpoint.safetensors");
    let intact = std::fs::read(&ckpt).unwrap();
    let header_end = 8 + u64::from_le_bytes(intact[..8].try_into().unwrap()) as usize;
    let mut n = 0;
    let mut case = |bytes: &[u8], what: String| {
        for f in outputs.iter().chain(&["config.json"]) {
            let _ = std::fs::remove_file(out.join(f));
        }
        std::fs::write(&ckpt, bytes).unwrap();
        let r = run("pretrain", &args);
        n += 1;
        if r.ok() {
            assert!(read_outputs() == want, "checkpoint {what}: other outputs");
            return;
        }
        let lines: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("epoch "))
            .collect();
        assert!(
            r.code == Some(1)
                && lines.len() == 1
                && lines[0].starts_with("error: ")
                && lines[0].contains("checkpoint.safetensors"),
            "checkpoint {what}: not one clean error naming it (exit {:?}): {}",
            r.code,
            r.stderr
        );
        for f in outputs.iter().chain(&["config.json"]) {
            assert!(
                !out.join(f).exists(),
                "checkpoint {what}: a failed run wrote {f}"
            );
        }
    };
    case(&intact, "intact".into());
    assert!(read_outputs() == want);
    for k in cuts(intact.len(), &[8, header_end]) {
        case(&intact[..k], format!("cut at {k} of {}", intact.len()));
    }
    // Seeded flips over the file, and every 16th byte of the header.
    let mut at = flips(intact.len());
    at.extend((0..header_end).step_by(16));
    for i in at {
        let mut bytes = intact.clone();
        bytes[i] ^= 0x5a;
        case(&bytes, format!("byte {i} of {} flipped", intact.len()));
    }
    eprintln!(
        "{n} cut and flipped checkpoints in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(n > 150, "{n} cases");
}
