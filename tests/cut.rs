//! Every reader, cut and flipped: each valid input of `tests/corpus/good/`
//! (and the image-format fixtures) is cut at many offsets (every byte of
//! its header, each record or member boundary ±1, evenly spaced points,
//! the last bytes) and, where the format carries a checksum (gzip, PNG),
//! has single bytes flipped, and is given to the stage that reads it. Each
//! case must end one of two ways: the output of the intact input, byte for
//! byte; or one `error:` line naming the file, exit code 1, and no output.
//! A shorter dataset is never produced without a word.
//!
//! Not here: flips in formats without a checksum (raw IDX, TIFF, BMP and
//! JPEG pixels, Parquet pages, safetensors data), which change a value
//! that no reader can tell from a real one, and the training checkpoint
//! (its cuts are in tests/kill.rs).

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
    /// Flip bytes too (the format has a checksum).
    flips: bool,
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
    if case.flips {
        // Seeded positions over the whole file, every header byte among them.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut at: BTreeSet<usize> = (0..intact.len().min(24)).collect();
        while at.len() < 60.min(intact.len()) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            at.insert(state as usize % intact.len());
        }
        for i in at {
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
    }
    std::fs::write(&case.file, &intact).unwrap();
    n
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
            false,
        ),
        ("t10k-labels-idx1-ubyte.gz", vec![10], true),
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
    for (file, boundaries, flips) in [("c.tar.gz", vec![10], true), ("c.tar", members, false)] {
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
            flips: *flips,
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
    for (name, file, boundaries) in [
        ("images.parquet", w.join("images.parquet"), vec![]),
        (
            "model.safetensors",
            w.join("model/model.safetensors"),
            vec![8, header_end],
        ),
        ("config.json", w.join("model/config.json"), vec![]),
    ] {
        cases.push(Case {
            name: name.to_string(),
            file,
            stage: "embed",
            args: embed_args.clone(),
            out: w.join("e.parquet"),
            boundaries,
            flips: false,
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
        flips: false,
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
