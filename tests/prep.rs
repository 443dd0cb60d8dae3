//! End-to-end tests of the `prep` binary: every source, the subset, the
//! download path and every bad input the prep issue lists.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use tsimcne_format::{ImageSet, Split, read_image_table};

const PREP: &str = "prep";

fn prep(args: &[&str]) -> Run {
    run(PREP, args)
}

fn prep_ok(args: &[&str]) -> Run {
    let r = prep(args);
    assert!(r.ok(), "prep {args:?} failed: {}", r.stderr);
    r
}

fn check_cifar10(set: &ImageSet, per: usize) {
    assert_eq!(set.len(), 6 * per);
    assert_eq!(
        (set.meta.height, set.meta.width, set.meta.channels),
        (32, 32, 3)
    );
    assert_eq!(set.meta.class_names, CIFAR10_NAMES);
    assert_eq!(
        set.splits.iter().filter(|s| **s == Split::Train).count(),
        5 * per
    );
    for m in 0..6 {
        for r in 0..per {
            let i = m * per + r;
            assert_eq!(set.labels[i], Some(i32::from(cifar10_label(m, r))));
            let img = set.image(i);
            for p in [0, 1, 33, 1023] {
                for c in 0..3 {
                    assert_eq!(
                        img[p * 3 + c],
                        cifar_pixel(m, r, c, p),
                        "image {i} pixel {p} channel {c}"
                    );
                }
            }
        }
    }
    assert_eq!(set.splits[5 * per], Split::Test);
}

#[test]
fn cifar10_archive_tar_and_directory_agree() {
    let dir = tempfile::tempdir().unwrap();
    let members = cifar10_members(4);
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    write_tar(&archive, &members, true);
    let out = dir.path().join("c10.parquet");
    let r = prep_ok(&[
        "cifar10",
        "--input",
        s(&archive),
        "--no-verify",
        "--out",
        s(&out),
    ]);
    // Fewer records than the official archive: said, not silent.
    assert!(
        r.stderr.contains(&format!(
            "warning: {} holds 20 train and 4 test records; the official cifar-10-binary.tar.gz holds 50000 and 10000",
            s(&archive)
        )),
        "{}",
        r.stderr
    );
    let from_gz = read_image_table(&out).unwrap();
    check_cifar10(&from_gz, 4);
    assert!(from_gz.meta.source_checksum.starts_with("md5:"));

    let tar = dir.path().join("plain.tar");
    write_tar(&tar, &members, false);
    prep_ok(&[
        "cifar10",
        "--input",
        s(&tar),
        "--no-verify",
        "--out",
        s(&out),
    ]);
    assert_eq!(read_image_table(&out).unwrap().pixels, from_gz.pixels);

    let extracted = dir.path().join("x");
    write_extracted(&extracted, &members);
    for input in [extracted.clone(), extracted.join("cifar-10-batches-bin")] {
        prep_ok(&["cifar10", "--input", s(&input), "--out", s(&out)]);
        let set = read_image_table(&out).unwrap();
        assert_eq!(set.pixels, from_gz.pixels);
        assert_eq!(set.labels, from_gz.labels);
    }
}

#[test]
fn cifar100_has_coarse_labels() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c100.tar.gz");
    write_tar(&archive, &cifar100_members(7, 3), true);
    let out = dir.path().join("c100.parquet");
    prep_ok(&[
        "cifar100",
        "--input",
        s(&archive),
        "--no-verify",
        "--out",
        s(&out),
    ]);
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.len(), 10);
    assert_eq!(set.meta.class_names.len(), 100);
    assert_eq!(
        set.meta.coarse_class_names.as_ref().unwrap()[19],
        "coarse_19"
    );
    for r in 0..7 {
        let (c, f) = cifar100_labels(r);
        assert_eq!(set.labels[r], Some(i32::from(f)));
        assert_eq!(set.coarse_labels[r], Some(i32::from(c)));
        assert_eq!(set.image(r)[3 * 5 + 2], cifar_pixel(0, r, 2, 5));
    }
    assert_eq!(set.splits[7..], [Split::Test; 3]);
}

#[test]
fn mnist_gz_and_raw_and_one_split() {
    let dir = tempfile::tempdir().unwrap();
    let (gz, raw) = (dir.path().join("gz"), dir.path().join("raw"));
    std::fs::create_dir_all(&gz).unwrap();
    std::fs::create_dir_all(&raw).unwrap();
    write_idx_split(&gz, "train", 30, 5, 4, true);
    write_idx_split(&gz, "t10k", 10, 5, 4, true);
    write_idx_split(&raw, "train", 30, 5, 4, false);
    write_idx_split(&raw, "t10k", 10, 5, 4, false);
    let out = dir.path().join("m.parquet");
    prep_ok(&["mnist", "--input", s(&gz), "--out", s(&out)]);
    let a = read_image_table(&out).unwrap();
    assert_eq!(a.len(), 40);
    assert_eq!((a.meta.height, a.meta.width, a.meta.channels), (5, 4, 1));
    assert_eq!(a.meta.class_names[3], "3");
    assert_eq!(a.image(1)[..3], [20, 21, 22]);
    assert_eq!(a.labels[13], Some(3));
    assert_eq!(a.splits[30], Split::Test);
    prep_ok(&["mnist", "--input", s(&raw), "--out", s(&out)]);
    let b = read_image_table(&out).unwrap();
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.labels, b.labels);
    // Only the test pair, as in data/fashion-mnist.
    let t = dir.path().join("t");
    std::fs::create_dir_all(&t).unwrap();
    write_idx_split(&t, "t10k", 10, 5, 4, true);
    prep_ok(&["fashion-mnist", "--input", s(&t), "--out", s(&out)]);
    let c = read_image_table(&out).unwrap();
    assert_eq!(c.splits, vec![Split::Test; 10]);
    assert_eq!(c.meta.class_names[9], "Ankle boot");
}

#[test]
fn embedded_fashion_mnist_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fm.parquet");
    let data = repo_root().join("data/fashion-mnist");
    prep_ok(&["fashion-mnist", "--input", s(&data), "--out", s(&out)]);
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.len(), 10_000);
    assert_eq!(
        (set.meta.height, set.meta.width, set.meta.channels),
        (28, 28, 1)
    );
    for c in 0..10 {
        assert_eq!(set.labels.iter().filter(|l| **l == Some(c)).count(), 1000);
    }
    // The first test image is an ankle boot (label 9).
    assert_eq!(set.labels[0], Some(9));

    // --size 14 on an IDX source: each pixel the rounded mean of a 2x2 block
    // of the 28x28 image, labels and order unchanged.
    let small = dir.path().join("fm14.parquet");
    prep_ok(&[
        "fashion-mnist",
        "--input",
        s(&data),
        "--limit",
        "50",
        "--size",
        "14",
        "--out",
        s(&small),
    ]);
    let full = dir.path().join("fm50.parquet");
    prep_ok(&[
        "fashion-mnist",
        "--input",
        s(&data),
        "--limit",
        "50",
        "--out",
        s(&full),
    ]);
    let (small, full) = (
        read_image_table(&small).unwrap(),
        read_image_table(&full).unwrap(),
    );
    assert_eq!((small.meta.height, small.meta.width), (14, 14));
    assert_eq!(small.labels, full.labels);
    for i in 0..full.len() {
        let (a, b) = (full.image(i), small.image(i));
        for y in 0..14 {
            for x in 0..14 {
                let sum: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(dy, dx)| u32::from(a[(2 * y + dy) * 28 + 2 * x + dx]))
                    .sum();
                assert_eq!(
                    u32::from(b[y * 14 + x]),
                    (sum + 2) / 4,
                    "image {i} ({y}, {x})"
                );
            }
        }
    }
}

/// Debian's dataset-fashion-mnist, or `None` (said on stderr) where it is
/// not installed. CI installs it and sets TSIMCNE_REQUIRE_FMNIST=1, so there
/// a missing dataset fails instead of skipping the real-data checks.
fn debian_fashion_mnist() -> Option<&'static Path> {
    let debian = Path::new("/usr/share/datasets/fashion-mnist");
    if debian.is_dir() {
        return Some(debian);
    }
    assert!(
        std::env::var_os("TSIMCNE_REQUIRE_FMNIST").is_none(),
        "TSIMCNE_REQUIRE_FMNIST is set but {} is missing",
        debian.display()
    );
    eprintln!(
        "skipping the real data: {} is not installed",
        debian.display()
    );
    None
}

/// The real 70,000 images from Debian's dataset-fashion-mnist, when installed.
#[test]
fn real_fashion_mnist_when_present() {
    if debian_fashion_mnist().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fm.parquet");
    prep_ok(&["fashion-mnist", "--out", s(&out)]); // the default input, Debian's
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.len(), 70_000);
    assert_eq!(
        set.splits.iter().filter(|s| **s == Split::Train).count(),
        60_000
    );
    for c in 0..10 {
        assert_eq!(set.labels.iter().filter(|l| **l == Some(c)).count(), 7_000);
    }
    // The test split equals the embedded copy.
    let emb = dir.path().join("emb.parquet");
    prep_ok(&[
        "fashion-mnist",
        "--input",
        s(&repo_root().join("data/fashion-mnist")),
        "--out",
        s(&emb),
    ]);
    let emb = read_image_table(&emb).unwrap();
    assert_eq!(&set.pixels[60_000 * 784..], &emb.pixels[..]);
}

#[test]
fn limit_is_stratified_seeded_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    write_idx_split(&idx, "train", 400, 3, 3, true);
    write_idx_split(&idx, "t10k", 100, 3, 3, true);
    let (a, b, c) = (
        dir.path().join("a.parquet"),
        dir.path().join("b.parquet"),
        dir.path().join("c.parquet"),
    );
    prep_ok(&[
        "mnist",
        "--input",
        s(&idx),
        "--limit",
        "50",
        "--seed",
        "3",
        "--out",
        s(&a),
    ]);
    prep_ok(&[
        "mnist",
        "--input",
        s(&idx),
        "--limit",
        "50",
        "--seed",
        "3",
        "--out",
        s(&b),
    ]);
    prep_ok(&[
        "mnist",
        "--input",
        s(&idx),
        "--limit",
        "50",
        "--seed",
        "4",
        "--out",
        s(&c),
    ]);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same seed, same bytes"
    );
    let set = read_image_table(&a).unwrap();
    assert_eq!(set.len(), 50);
    assert_eq!(set.splits.iter().filter(|s| **s == Split::Test).count(), 10);
    for l in 0..10 {
        assert_eq!(set.labels.iter().filter(|x| **x == Some(l)).count(), 5);
    }
    let sub = set.meta.subset.clone().unwrap();
    assert_eq!((sub.limit, sub.seed, sub.of), (50, 3, 500));
    assert_ne!(set.pixels, read_image_table(&c).unwrap().pixels);
}

#[test]
fn folder_with_classes_sizes_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for i in 0..3 {
        save_rgb(&root.join(format!("cat/{i}.png")), 8, 6, |x, y| {
            [x as u8 * 10, y as u8 * 10, i * 50]
        });
        save_rgb(&root.join(format!("dog/sub/{i}.PNG")), 8, 6, |x, _| {
            [200, x as u8, 0]
        });
    }
    save_rgb(&root.join("ant/a.jpg"), 8, 6, |_, _| [90, 90, 90]);
    std::fs::write(root.join("cat/notes.txt"), "not an image, ignored").unwrap();
    let out = dir.path().join("f.parquet");
    prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.meta.class_names, ["ant", "cat", "dog"]);
    assert_eq!(set.len(), 7);
    assert_eq!(
        (set.meta.height, set.meta.width, set.meta.channels),
        (6, 8, 3)
    );
    assert_eq!(
        set.labels,
        [
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            Some(2)
        ]
    );
    // cat/1.png pixel (x=2, y=3) is [20, 30, 50].
    assert_eq!(
        set.image(2)[(3 * 8 + 2) * 3..(3 * 8 + 2) * 3 + 3],
        [20, 30, 50]
    );

    // Grey with PIL's luma, resized, and the same bytes on 1 and 2 threads.
    let (g1, g2) = (dir.path().join("g1.parquet"), dir.path().join("g2.parquet"));
    let args = |o: &Path, t: &'static str| -> Vec<String> {
        [
            "folder",
            "--input",
            s(&root),
            "--channels",
            "1",
            "--size",
            "4x4",
            "--threads",
            t,
            "--out",
            s(o),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let a1 = args(&g1, "1");
    let a2 = args(&g2, "2");
    prep_ok(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    prep_ok(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read(&g1).unwrap(), std::fs::read(&g2).unwrap());
    let grey = read_image_table(&g1).unwrap();
    assert_eq!(
        (grey.meta.height, grey.meta.width, grey.meta.channels),
        (4, 4, 1)
    );
    // dog images are [200, x, 0]-ish: luma ≈ 200·0.299 = 60 plus a little green.
    assert!(
        grey.image(4).iter().all(|&v| (60..=65).contains(&v)),
        "{:?}",
        grey.image(4)
    );
}

#[test]
fn flat_folder_is_unlabelled_and_grey_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("flat");
    for i in 0..4u8 {
        save_grey(&root.join(format!("{i}.png")), 5, 5, |x, y| {
            (x + y) as u8 + i
        });
    }
    let out = dir.path().join("f.parquet");
    prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.meta.channels, 1);
    assert!(set.meta.class_names.is_empty());
    assert_eq!(set.labels, vec![None; 4]);
    assert_eq!(set.image(3)[6], 5); // (x=1, y=1) of image 3
}

#[test]
fn download_from_a_local_server() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let members = cifar10_members(2);
    let m: Vec<Member<'_>> = members
        .iter()
        .map(|(n, d)| Member { name: n, data: d })
        .collect();
    let body = tar_bytes(&m, true);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 4096];
        let _ = conn.read(&mut req).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body).unwrap();
    });
    let archive = dir.path().join("dl/cifar-10-binary.tar.gz");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let out = dir.path().join("c.parquet");
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    prep_ok(&[
        "cifar10",
        "--download",
        "--url",
        &url,
        "--no-verify",
        "--input",
        s(&archive),
        "--out",
        s(&out),
    ]);
    server.join().unwrap();
    assert!(archive.is_file());
    check_cifar10(&read_image_table(&out).unwrap(), 2);
    // With the archive present, --download does not fetch again (no server now).
    prep_ok(&[
        "cifar10",
        "--download",
        "--url",
        &url,
        "--no-verify",
        "--input",
        s(&archive),
        "--out",
        s(&out),
    ]);
}

#[test]
fn download_failures_are_one_line_errors_and_leave_nothing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let out = dir.path().join("c.parquet");
    // A server that answers 404.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 4096];
        let _ = conn.read(&mut req).unwrap();
        let body = "no such file";
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(body.as_bytes()).unwrap();
    });
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let args = [
        "cifar10",
        "--download",
        "--url",
        &url,
        "--input",
        s(&archive),
        "--out",
        s(&out),
    ];
    prep(&args).assert_user_error(&url, &["404"]);
    server.join().unwrap();
    assert!(!archive.exists() && !out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // No `curl` on PATH: the error says what to install or do instead.
    let empty = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(stage(PREP))
        .args(args)
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let r = Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    r.assert_user_error(&url, &["`curl`", "--input"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn same_input_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c.tar.gz");
    write_tar(&archive, &cifar10_members(3), true);
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    prep_ok(&[
        "cifar10",
        "--input",
        s(&archive),
        "--no-verify",
        "--out",
        s(&a),
    ]);
    prep_ok(&[
        "cifar10",
        "--input",
        s(&archive),
        "--no-verify",
        "--out",
        s(&b),
    ]);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

/// `python3 tests/read_with_pyarrow.py` reads our table with pyarrow and
/// pandas. CI sets TSIMCNE_REQUIRE_PYARROW=1 so a missing pyarrow fails.
#[test]
fn reads_cleanly_in_pyarrow_and_pandas() {
    if !python_with_pyarrow() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c.tar.gz");
    write_tar(&archive, &cifar100_members(5, 2), true);
    let out = dir.path().join("c.parquet");
    prep_ok(&[
        "cifar100",
        "--input",
        s(&archive),
        "--no-verify",
        "--out",
        s(&out),
    ]);
    let script = repo_root().join("tests/read_with_pyarrow.py");
    let r = run("python3", &[s(&script), s(&out)]);
    assert!(r.ok(), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("7 rows"), "{}", r.stdout);
}

// ---- bad input: one line naming the file, exit 1, no output ----

fn assert_no_output(out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    let debris: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(debris.is_empty(), "temporary files left: {debris:?}");
}

#[test]
fn truncated_and_corrupt_archives() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = tar_bytes(
        &cifar10_members(3)
            .iter()
            .map(|(n, d)| Member { name: n, data: d })
            .collect::<Vec<_>>(),
        true,
    );
    let out = dir.path().join("o.parquet");
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    prep(&[
        "cifar10",
        "--input",
        s(&cut),
        "--no-verify",
        "--out",
        s(&out),
    ])
    .assert_user_error("cut.tar.gz", &["truncated or corrupt"]);
    assert_no_output(&out);
    // A flipped byte in the middle of the deflate stream.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = dir.path().join("bad.tar.gz");
    std::fs::write(&bad, &bytes).unwrap();
    prep(&[
        "cifar10",
        "--input",
        s(&bad),
        "--no-verify",
        "--out",
        s(&out),
    ])
    .assert_user_error("bad.tar.gz", &["truncated or corrupt"]);
    assert_no_output(&out);
}

#[test]
fn wrong_size_and_wrong_md5() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let small = dir.path().join("cifar-10-binary.tar.gz");
    write_tar(&small, &cifar10_members(1), true);
    prep(&["cifar10", "--input", s(&small), "--out", s(&out)]).assert_user_error(
        "cifar-10-binary.tar.gz",
        &["size is", "170052171", "--no-verify"],
    );
    // The official size, wrong content: a sparse file of zeros.
    let zeros = dir.path().join("zeros.tar.gz");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(170_052_171)
        .unwrap();
    prep(&["cifar10", "--input", s(&zeros), "--out", s(&out)]).assert_user_error(
        "zeros.tar.gz",
        &["md5 is", "c32a1d4ab5d03f1284b67883e8d87530"],
    );
    assert_no_output(&out);
}

#[test]
fn missing_and_hostile_members() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let mut members = cifar10_members(1);
    members.retain(|(n, _)| !n.ends_with("test_batch.bin") && !n.ends_with("meta.txt"));
    let a = dir.path().join("missing.tar.gz");
    write_tar(&a, &members, true);
    prep(&["cifar10", "--input", s(&a), "--no-verify", "--out", s(&out)]).assert_user_error(
        "missing.tar.gz",
        &["missing", "test_batch.bin", "batches.meta.txt"],
    );

    let mut members = cifar10_members(1);
    members.insert(0, ("../../evil.bin".into(), b"x".to_vec()));
    let a = dir.path().join("evil.tar.gz");
    write_tar(&a, &members, true);
    prep(&["cifar10", "--input", s(&a), "--no-verify", "--out", s(&out)])
        .assert_user_error("evil.tar.gz", &["refusing", "../../evil.bin"]);
    assert!(
        !dir.path().join("evil.bin").exists()
            && !dir.path().parent().unwrap().join("evil.bin").exists()
    );

    // A member whose header claims more than the official size.
    let mut members = cifar10_members(1);
    members[0].1 = vec![0; 10_001 * 3073];
    let a = dir.path().join("big.tar.gz");
    write_tar(&a, &members, true);
    prep(&["cifar10", "--input", s(&a), "--no-verify", "--out", s(&out)])
        .assert_user_error("big.tar.gz", &["more than the official"]);
    // A record count that is not whole, and an out-of-range label.
    let mut members = cifar10_members(1);
    members[1].1.pop();
    let a = dir.path().join("ragged.tar.gz");
    write_tar(&a, &members, true);
    prep(&["cifar10", "--input", s(&a), "--no-verify", "--out", s(&out)])
        .assert_user_error("ragged.tar.gz", &["data_batch_2.bin", "whole number"]);
    let mut members = cifar10_members(1);
    members[2].1[0] = 10;
    let a = dir.path().join("label.tar.gz");
    write_tar(&a, &members, true);
    prep(&["cifar10", "--input", s(&a), "--no-verify", "--out", s(&out)])
        .assert_user_error("label.tar.gz", &["label 10"]);
    assert_no_output(&out);
}

#[test]
fn bad_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let case = |name: &str, images: Vec<u8>| -> std::path::PathBuf {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        write_idx_split(&d, "t10k", 4, 2, 2, false);
        std::fs::write(d.join("t10k-images-idx3-ubyte"), images).unwrap();
        d
    };
    let d = case("magic", idx_bytes(0x801, &[4, 2, 2], &[0; 16]));
    prep(&["mnist", "--input", s(&d), "--out", s(&out)]).assert_user_error(
        "t10k-images-idx3-ubyte",
        &["magic number is 0x00000801, expected 0x00000803"],
    );
    // The header promises a billion images; the file holds 16 bytes. Nothing
    // of that size may be allocated.
    let d = case("huge", idx_bytes(0x803, &[1_000_000_000, 28, 28], &[0; 16]));
    prep(&["mnist", "--input", s(&d), "--out", s(&out)]).assert_user_error(
        "t10k-images-idx3-ubyte",
        &["header disagrees", "1000000000x28x28"],
    );
    let d = case("long", idx_bytes(0x803, &[4, 2, 2], &[0; 17]));
    prep(&["mnist", "--input", s(&d), "--out", s(&out)]).assert_user_error(
        "t10k-images-idx3-ubyte",
        &["header disagrees", "holds more"],
    );
    let d = case(
        "gzcut",
        gzip(&idx_bytes(0x803, &[4, 2, 2], &[0; 16]))[..20].to_vec(),
    );
    std::fs::rename(
        d.join("t10k-images-idx3-ubyte"),
        d.join("t10k-images-idx3-ubyte.gz"),
    )
    .unwrap();
    // Both the raw and the .gz file exist: the raw one is preferred, so drop it.
    let _ = std::fs::remove_file(d.join("t10k-images-idx3-ubyte"));
    prep(&["mnist", "--input", s(&d), "--out", s(&out)])
        .assert_user_error("t10k-images-idx3-ubyte.gz", &["truncated or corrupt"]);
    let d = case("short", idx_bytes(0x803, &[4], &[]));
    prep(&["mnist", "--input", s(&d), "--out", s(&out)])
        .assert_user_error("t10k-images-idx3-ubyte", &["ends inside the header"]);
    // A lone images file without its labels.
    let d = dir.path().join("lone");
    std::fs::create_dir_all(&d).unwrap();
    write_idx_split(&d, "t10k", 4, 2, 2, true);
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    prep(&["mnist", "--input", s(&d), "--out", s(&out)])
        .assert_user_error("lone", &["missing t10k-labels-idx1-ubyte"]);
    assert_no_output(&out);
}

#[test]
fn bad_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let root = dir.path().join("unreadable");
    save_rgb(&root.join("a/1.png"), 4, 4, |_, _| [1, 2, 3]);
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("b/2.png"), b"this is not a png").unwrap();
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("b/2.png", &["unreadable image"]);

    let root = dir.path().join("mixed");
    save_rgb(&root.join("a/1.png"), 4, 4, |_, _| [1, 2, 3]);
    save_rgb(&root.join("a/2.png"), 5, 4, |_, _| [1, 2, 3]);
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("mixed", &["different sizes", "a/2.png is 5x4", "--size"]);
    prep_ok(&[
        "folder",
        "--input",
        s(&root),
        "--size",
        "4",
        "--out",
        s(&out),
    ]);
    std::fs::remove_file(&out).unwrap();

    let root = dir.path().join("both");
    save_rgb(&root.join("a/1.png"), 4, 4, |_, _| [1, 2, 3]);
    save_rgb(&root.join("2.png"), 4, 4, |_, _| [1, 2, 3]);
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("both", &["mixes images"]);

    let root = dir.path().join("empty");
    std::fs::create_dir_all(root.join("a")).unwrap();
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("empty/a", &["holds no images"]);
    assert_no_output(&out);
}

/// A 64x48 photo-like JPEG, and the same file cut to a third of its bytes.
fn jpeg_and_cut(root: &Path, name: &str, cut: &str) {
    let path = root.join(name);
    save_rgb(&path, 64, 48, |x, y| {
        [(x * 4) as u8, (y * 5) as u8, ((x * y) % 251) as u8]
    });
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(root.join(cut), &bytes[..bytes.len() / 3]).unwrap();
}

#[test]
fn a_cut_jpeg_is_an_error_not_a_grey_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    jpeg_and_cut(&root, "a/whole.jpg", "a/cut.jpg");
    let out = dir.path().join("o.parquet");
    prep(&["folder", "--input", s(&root), "--out", s(&out)]).assert_user_error(
        "a/cut.jpg",
        &["unreadable image", "JPEG", "--skip-unreadable"],
    );
    assert_no_output(&out);
    // The whole file alone reads, with the image crate's decoding.
    std::fs::remove_file(root.join("a/cut.jpg")).unwrap();
    prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    let set = read_image_table(&out).unwrap();
    let want = image::open(root.join("a/whole.jpg")).unwrap().to_rgb8();
    assert_eq!(set.pixels, want.into_raw());
}

/// The fixtures in `tests/golden/<folder>` (made by a Pillow script there),
/// without their `.expected.png` references, sorted.
fn fixtures(folder: &str) -> Vec<String> {
    let dir = repo_root().join("tests/golden").join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".expected.png"))
        .collect();
    names.sort();
    names
}

/// WebP, TIFF (uncompressed, LZW, Deflate, 16-bit grey), BMP and GIF (the
/// first frame of an animated one) read exactly as Pillow reads them
/// (tests/golden/make_format_fixtures.py).
#[test]
fn every_format_reads_as_pillow_reads_it() {
    let golden = repo_root().join("tests/golden/formats");
    let names = fixtures("formats");
    assert_eq!(names.len(), 8, "{names:?}");
    for name in names {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(golden.join(&name), root.join(&name)).unwrap();
        let want = image::open(golden.join(format!("{name}.expected.png"))).unwrap();
        let grey = want.color() == image::ColorType::L8;
        let out = dir.path().join("t.parquet");
        let channels = if grey { "1" } else { "3" };
        prep_ok(&[
            "folder",
            "--input",
            s(&root),
            "--out",
            s(&out),
            "--channels",
            channels,
        ]);
        let set = read_image_table(&out).unwrap();
        let want = if grey {
            want.to_luma8().into_raw()
        } else {
            want.to_rgb8().into_raw()
        };
        assert_eq!((set.meta.width, set.meta.height), (12, 10), "{name}");
        assert_eq!(set.pixels, want, "{name}: pixels differ from Pillow's");
    }
}

/// A file cut short is an error in every format, naming it, never an image
/// with its missing part filled in; `--skip-unreadable` leaves it out and
/// lists it.
#[test]
fn a_cut_file_is_an_error_in_every_format() {
    let golden = repo_root().join("tests/golden/formats");
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    save_rgb(&made.join("x.png"), 12, 10, |x, y| {
        [(x * 20) as u8, (y * 25) as u8, 7]
    });
    save_rgb(&made.join("x.jpg"), 12, 10, |x, y| {
        [(x * 20) as u8, (y * 25) as u8, 7]
    });
    let mut files: Vec<PathBuf> = fixtures("formats").iter().map(|n| golden.join(n)).collect();
    files.extend([made.join("x.png"), made.join("x.jpg")]);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let root = dir.path().join(format!("in-{name}"));
        std::fs::create_dir_all(&root).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(root.join(format!("whole-{name}")), &bytes).unwrap();
        let cut = format!("cut-{name}");
        std::fs::write(root.join(&cut), &bytes[..bytes.len() / 2]).unwrap();
        let out = dir.path().join(format!("{name}.parquet"));
        let args = [
            "folder",
            "--input",
            s(&root),
            "--out",
            s(&out),
            "--channels",
            "3",
        ];
        prep(&args).assert_user_error(&cut, &["--skip-unreadable"]);
        assert_no_output(&out);
        let mut skip = args.to_vec();
        skip.push("--skip-unreadable");
        prep_ok(&skip);
        assert_eq!(read_image_table(&out).unwrap().len(), 1, "{name}");
        let list = std::fs::read_to_string(dir.path().join(format!("{name}.skipped.csv"))).unwrap();
        assert!(
            list.lines().nth(1).unwrap().starts_with(&cut),
            "{name}: {list}"
        );
    }
}

#[test]
fn skip_unreadable_leaves_bad_files_out_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mixed bag");
    save_rgb(&root.join("cats/1.png"), 64, 48, |x, _| [x as u8, 0, 0]);
    jpeg_and_cut(&root, "cats/2.jpg", "cats/3, cut.jpg");
    save_rgb(&root.join("dogs/4.png"), 64, 48, |_, y| [0, y as u8, 0]);
    std::fs::write(root.join("dogs/\"quoted\".png"), b"").unwrap();
    std::fs::write(root.join("dogs/5.png"), b"this is not a png").unwrap();
    let out = dir.path().join("t.parquet");
    let list = dir.path().join("t.skipped.csv");

    // Without the flag: the first bad file (headers are read first, so the
    // empty file before the cut one), and the hint.
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("dogs/\"quoted\".png", &["--skip-unreadable"]);
    assert_no_output(&out);
    assert!(!list.exists());

    let r = prep_ok(&[
        "folder",
        "--input",
        s(&root),
        "--out",
        s(&out),
        "--skip-unreadable",
    ]);
    assert!(
        r.stderr.contains("skipped 3 unreadable files, listed in"),
        "{}",
        r.stderr
    );
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(set.labels, vec![Some(0), Some(0), Some(1)]);
    assert_eq!(set.meta.class_names, vec!["cats", "dogs"]);
    let csv = std::fs::read_to_string(&list).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "path,reason");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].starts_with("\"cats/3, cut.jpg\",JPEG: "), "{csv}");
    assert!(
        lines[2].starts_with("\"dogs/\"\"quoted\"\".png\","),
        "{csv}"
    );
    assert!(lines[3].starts_with("dogs/5.png,"), "{csv}");
    assert!(
        !csv.contains(s(&root)),
        "paths are relative to --input: {csv}"
    );

    // A later run without the flag removes the stale list with its success.
    let good = dir.path().join("good");
    save_rgb(&good.join("1.png"), 4, 4, |_, _| [1, 2, 3]);
    prep_ok(&["folder", "--input", s(&good), "--out", s(&out)]);
    assert!(!list.exists(), "an earlier run's list survived");

    // Nothing readable is an error, even when skipping.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("1.png"), b"no").unwrap();
    std::fs::write(bad.join("2.jpg"), b"").unwrap();
    let out2 = dir.path().join("none.parquet");
    prep(&[
        "folder",
        "--input",
        s(&bad),
        "--out",
        s(&out2),
        "--skip-unreadable",
    ])
    .assert_user_error("bad", &["none of the 2 images could be read", "1.png"]);
    assert_no_output(&out2);

    // Only for folders.
    prep(&[
        "mnist",
        "--input",
        s(&bad),
        "--out",
        s(&out2),
        "--skip-unreadable",
    ])
    .assert_user_error("bad", &["--skip-unreadable is for folder sources"]);
}

#[test]
fn a_folder_table_names_each_file_and_later_stages_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    for i in 0..24u32 {
        let class = if i % 2 == 0 { "cats" } else { "dogs" };
        save_rgb(&root.join(format!("{class}/{i:02}.png")), 12, 12, |x, y| {
            [(x * 20 + i) as u8, (y * 20) as u8, (i * 9) as u8]
        });
    }
    // A file name that is not UTF-8 (Latin-1 "café").
    #[cfg(unix)]
    let odd = {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
        std::fs::copy(root.join("dogs/01.png"), root.join("dogs").join(name)).unwrap();
        true
    };
    #[cfg(not(unix))]
    let odd = false;
    let images = dir.path().join("images.parquet");
    prep_ok(&["folder", "--input", s(&root), "--out", s(&images)]);
    let set = read_image_table(&images).unwrap();
    let texts: Vec<&str> = set.paths.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts[0], "cats/00.png");
    assert_eq!(texts[12], "dogs/01.png");
    if odd {
        assert_eq!(set.len(), 25);
        let p = &set.paths[24];
        assert_eq!(p.text, "dogs/caf\u{fffd}.png");
        assert_eq!(p.bytes.as_deref(), Some(&b"dogs/caf\xe9.png"[..]));
        assert!(set.paths[..24].iter().all(|p| p.bytes.is_none()));
    }
    // The training stages, embed and evaluate read a table with paths.
    let pre = dir.path().join("pre");
    let r = run(
        "pretrain",
        &[
            "--images",
            s(&images),
            "--out",
            s(&pre),
            "--backbone",
            "tiny",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "2",
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let emb = dir.path().join("emb.parquet");
    let r = run(
        "embed",
        &[
            "--model",
            s(&pre),
            "--images",
            s(&images),
            "--out",
            s(&emb),
            "--threads",
            "2",
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let r = run(
        "evaluate",
        &[
            "--embedding",
            s(&emb),
            "--images",
            s(&images),
            "--out",
            s(&dir.path().join("ev")),
            "--test-size",
            "5",
            "--repeats",
            "1",
            "--k",
            "3",
            "--no-plot",
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
}

#[test]
fn exact_duplicates_are_listed_and_dedupe_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("scraped");
    for i in 0..4u32 {
        save_rgb(&root.join(format!("a/{i}.png")), 8, 8, |x, _| {
            [(x + i) as u8, 0, 0]
        });
    }
    // The same bytes under two more names, one in another class.
    std::fs::copy(root.join("a/1.png"), root.join("a/1 copy.png")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::copy(root.join("a/1.png"), root.join("b/same.png")).unwrap();
    save_rgb(&root.join("b/other.png"), 8, 8, |_, y| [0, y as u8, 0]);
    let out = dir.path().join("t.parquet");
    let list = dir.path().join("t.duplicates.csv");
    let r = prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    assert!(
        r.stderr.contains("found 2 exact duplicates"),
        "{}",
        r.stderr
    );
    assert_eq!(read_image_table(&out).unwrap().len(), 7);
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "path,duplicate_of\na/1.png,a/1 copy.png\nb/same.png,a/1 copy.png\n"
    );
    let r = prep_ok(&["folder", "--input", s(&root), "--out", s(&out), "--dedupe"]);
    assert!(r.stderr.contains("left out"), "{}", r.stderr);
    let set = read_image_table(&out).unwrap();
    assert_eq!(set.len(), 5);
    let paths: Vec<&str> = set.paths.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        paths,
        [
            "a/0.png",
            "a/1 copy.png",
            "a/2.png",
            "a/3.png",
            "b/other.png"
        ]
    );
    // A folder without duplicates removes an earlier run's list.
    std::fs::remove_file(root.join("a/1.png")).unwrap();
    std::fs::remove_file(root.join("b/same.png")).unwrap();
    prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    assert!(!list.exists());
}

#[cfg(unix)]
#[test]
fn a_link_cycle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("linked");
    save_rgb(&root.join("a/deep/1.png"), 4, 4, |_, _| [1, 2, 3]);
    std::os::unix::fs::symlink("../..", root.join("a/deep/up")).unwrap();
    let out = dir.path().join("t.parquet");
    prep(&["folder", "--input", s(&root), "--out", s(&out)])
        .assert_user_error("a/deep/up", &["link (to ../..)", "a cycle"]);
    // A link that is not a cycle is followed.
    std::fs::remove_file(root.join("a/deep/up")).unwrap();
    save_rgb(&dir.path().join("elsewhere/2.png"), 4, 4, |_, _| [4, 5, 6]);
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("a/more")).unwrap();
    prep_ok(&["folder", "--input", s(&root), "--out", s(&out)]);
    assert_eq!(read_image_table(&out).unwrap().len(), 2);
}

/// EXIF orientation, against Pillow's `ImageOps.exif_transpose`
/// (tests/golden/make_exif_fixtures.py): every JPEG orientation, a PNG's
/// eXIf chunk and a WebP's EXIF chunk, within a few levels of Pillow's JPEG
/// decoding.
#[test]
fn exif_orientation_is_applied() {
    let names = fixtures("exif");
    let golden = repo_root().join("tests/golden/exif");
    assert_eq!(names.len(), 10, "{names:?}");
    for name in names {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(golden.join(&name), root.join(&name)).unwrap();
        let out = dir.path().join("t.parquet");
        prep_ok(&[
            "folder",
            "--input",
            s(&root),
            "--out",
            s(&out),
            "--channels",
            "3",
        ]);
        let set = read_image_table(&out).unwrap();
        let want = image::open(golden.join(format!("{name}.expected.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (set.meta.width, set.meta.height),
            want.dimensions(),
            "{name}: shown size"
        );
        let worst = set
            .pixels
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 8,
            "{name}: pixels differ from Pillow's by up to {worst}"
        );
    }
}

#[test]
fn output_in_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    write_idx_split(&idx, "t10k", 4, 2, 2, true);
    let out = dir.path().join("no/such/dir/o.parquet");
    prep(&["mnist", "--input", s(&idx), "--out", s(&out)])
        .assert_user_error("no/such/dir", &["output directory", "does not exist"]);
}

#[test]
fn failed_run_keeps_the_earlier_output() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    write_idx_split(&idx, "t10k", 4, 2, 2, true);
    let out = dir.path().join("o.parquet");
    prep_ok(&["mnist", "--input", s(&idx), "--out", s(&out)]);
    let good = std::fs::read(&out).unwrap();
    std::fs::write(idx.join("t10k-labels-idx1-ubyte.gz"), b"garbage").unwrap();
    assert!(!prep(&["mnist", "--input", s(&idx), "--out", s(&out)]).ok());
    assert_eq!(std::fs::read(&out).unwrap(), good);
}

#[test]
fn usage_errors() {
    let r = prep(&["mnist", "--out", "x.parquet"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("mnist needs --input"), "{}", r.stderr);
    let r = prep(&["nonsense", "--out", "x.parquet"]);
    assert_eq!(r.code, Some(2), "clap usage errors exit 2");
    let r = prep(&["--help"]);
    assert!(
        r.stdout.contains("[default: crop]") && r.stdout.contains("[default: 0]"),
        "{}",
        r.stdout
    );
}

// ---- an independent oracle: Python's tarfile/gzip + numpy ----

fn python_with_pyarrow() -> bool {
    common::python_imports("pyarrow, pandas, numpy", "the Python oracle")
}

fn oracle(source: &str, input: &Path, table: &Path) {
    let script = repo_root().join("tests/oracle_readers.py");
    let r = run("python3", &[s(&script), source, s(input), s(table)]);
    assert!(
        r.ok() && r.stdout.contains("oracle agrees"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// Our readers agree with an independent reader written from the published
/// format descriptions, on generated CIFAR archives and on the real
/// Fashion-MNIST files (embedded, and Debian's 70,000 when installed).
#[test]
fn readers_agree_with_the_python_oracle() {
    if !python_with_pyarrow() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let c10 = dir.path().join("c10.tar.gz");
    write_tar(&c10, &cifar10_members(20), true);
    prep_ok(&[
        "cifar10",
        "--input",
        s(&c10),
        "--no-verify",
        "--out",
        s(&out),
    ]);
    oracle("cifar10", &c10, &out);
    let c100 = dir.path().join("c100");
    write_extracted(&c100, &cifar100_members(30, 10));
    let c100 = c100.join("cifar-100-binary");
    prep_ok(&["cifar100", "--input", s(&c100), "--out", s(&out)]);
    oracle("cifar100", &c100, &out);
    let fm = repo_root().join("data/fashion-mnist");
    prep_ok(&["fashion-mnist", "--input", s(&fm), "--out", s(&out)]);
    oracle("fashion-mnist", &fm, &out);
    if let Some(debian) = debian_fashion_mnist() {
        prep_ok(&["fashion-mnist", "--input", s(debian), "--out", s(&out)]);
        oracle("fashion-mnist", debian, &out);
    }
}
