//! A read-only output directory and a full disk: a clear one-line error
//! naming the file, and nothing lost (earlier outputs byte-identical, no
//! temporaries, a training run resumable from its last checkpoint).
//!
//! Both need the machine's help: the full disk is a small tmpfs and the
//! read-only directory a read-only bind mount, each inside private user and
//! mount namespaces (`unshare -rm`), so the test needs no privileges and
//! leaves no mount behind. Where `unshare` is refused the read-only case
//! falls back to `chmod` (not for root, whom permissions do not stop) and
//! the full-disk case is skipped, each with a printed note.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const PREP: &str = "prep";
const PRETRAIN: &str = "pretrain";
const PROJECT: &str = "project";
const EMBED: &str = "embed";
const EVALUATE: &str = "evaluate";

/// Whether private user and mount namespaces can be made here.
fn namespaces() -> bool {
    Command::new("unshare")
        .args(["-rm", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Runs the `sh` script in private namespaces with `args` as `$1…`.
fn in_namespace(script: &str, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("unshare runs")
}

fn as_run(o: Output) -> Run {
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn images(dir: &Path, n: usize, name: &str) -> PathBuf {
    let out = dir.join(name);
    embedded_subset(&out, n);
    out
}

/// Runs `bin args` with `dir` read-only: a read-only bind mount in private
/// namespaces, or `chmod 555` for a user whom permissions stop. `None`
/// when neither is possible here.
fn with_read_only(dir: &Path, bin: &str, args: &[&str]) -> Option<Run> {
    if namespaces() {
        let script = r#"d="$1"; shift
mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 99
exec "$@""#;
        let path = stage(bin);
        let mut a = vec![s(dir), s(&path)];
        a.extend(args);
        let o = in_namespace(script, &a);
        if o.status.code() != Some(99) {
            return Some(as_run(o));
        }
    }
    if is_root() {
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let set = |mode| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    set(0o555);
    let r = run(bin, args);
    set(0o755);
    Some(r)
}

#[test]
fn read_only_output_directory_is_refused_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let imgs = images(d.path(), 48, "images.parquet");
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // Earlier good outputs in the directory: a table, a finished pretrain
    // stage, an embedding and an evaluation.
    let table = images(&ro, 32, "images.parquet");
    let pre = ro.join("pretrain");
    let r = run(PRETRAIN, &tiny_pretrain_args(&imgs, &pre, "1"));
    assert!(r.ok(), "{}", r.stderr);
    let emb = ro.join("e.parquet");
    assert!(
        run(
            EMBED,
            &["--model", s(&pre), "--images", s(&imgs), "--out", s(&emb)]
        )
        .ok()
    );
    let ev = ro.join("evaluate");
    let r = run(
        EVALUATE,
        &[
            "--embedding",
            s(&emb),
            "--images",
            s(&imgs),
            "--out",
            s(&ev),
        ],
    );
    assert!(r.ok(), "{}", r.stderr);
    let before = snapshot(&ro);

    let data = repo_root().join("data/fashion-mnist");
    let project_out = ro.join("project");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        // The same pretrain command again: it would rewrite its outputs.
        (PRETRAIN, tiny_pretrain_args(&imgs, &pre, "1"), "pretrain"),
        (
            PROJECT,
            vec![
                "--images",
                s(&imgs),
                "--from",
                s(&pre),
                "--out",
                s(&project_out),
                "--epochs",
                "1",
                "--batch-size",
                "16",
            ],
            "project",
        ),
        (
            PREP,
            vec![
                "fashion-mnist",
                "--input",
                s(&data),
                "--limit",
                "40",
                "--out",
                s(&table),
            ],
            "images.parquet",
        ),
        (
            EMBED,
            vec!["--model", s(&pre), "--images", s(&imgs), "--out", s(&emb)],
            "e.parquet",
        ),
        (
            EVALUATE,
            vec![
                "--embedding",
                s(&emb),
                "--images",
                s(&imgs),
                "--out",
                s(&ev),
            ],
            "evaluate",
        ),
    ];
    // The read-only directory is `ro` itself, or a stage directory in it.
    for (bin, args, named) in &cases {
        let target = if *bin == PRETRAIN {
            pre.clone()
        } else if *bin == EVALUATE {
            ev.clone()
        } else {
            ro.clone()
        };
        let Some(r) = with_read_only(&target, bin, args) else {
            eprintln!(
                "note: running as root without mount namespaces; the read-only directory check is skipped"
            );
            return;
        };
        r.assert_user_error(named, &[]);
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap()
            .to_string();
        assert!(
            line.contains("Read-only file system") || line.contains("Permission denied"),
            "{line}"
        );
        eprintln!("{line}");
        assert_eq!(snapshot(&ro), before, "{line}: the directory changed");
    }
}

/// The sh script of a full-disk run: a `size`-byte tmpfs on `mnt` seeded
/// with the files of `src`, the command, then the tmpfs's files copied to
/// `keep` (the tmpfs vanishes with the namespace).
const FULL_DISK: &str = r#"mnt="$1"; src="$2"; keep="$3"; size="$4"; shift 4
mount -t tmpfs -o size="$size" tmpfs "$mnt" || exit 99
cp -a "$src"/. "$mnt"/ || exit 98
"$@"; rc=$?
cp -a "$mnt"/. "$keep"/
exit $rc"#;

fn full_disk(
    mnt: &Path,
    src: &Path,
    keep: &Path,
    size: u64,
    bin: &str,
    args: &[&str],
) -> Option<Run> {
    if !namespaces() {
        return None;
    }
    std::fs::create_dir_all(mnt).unwrap();
    std::fs::create_dir_all(keep).unwrap();
    let size = size.to_string();
    let path = stage(bin);
    let mut a = vec![s(mnt), s(src), s(keep), size.as_str(), s(&path)];
    a.extend(args);
    let o = in_namespace(FULL_DISK, &a);
    match o.status.code() {
        Some(99) => None,
        Some(98) => panic!(
            "seeding the tmpfs failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        _ => Some(as_run(o)),
    }
}

const PAGE: u64 = 4096;

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE)
}

/// The disk fills between two checkpoints: the run stops with the file
/// named, the first checkpoint stays whole, and the same command resumes
/// from it elsewhere to the same bytes as an uninterrupted run.
#[test]
fn full_disk_during_training_keeps_the_last_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let imgs = images(d.path(), 48, "images.parquet");
    let clean = d.path().join("clean");
    let r = run(PRETRAIN, &tiny_pretrain_args(&imgs, &clean, "3"));
    assert!(r.ok(), "{}", r.stderr);
    let ckpt = std::fs::metadata(clean.join("checkpoint.safetensors"))
        .unwrap()
        .len();
    // Room for log.csv (and its temporary) and one checkpoint, and half of
    // a second: the second checkpoint's temporary cannot be written.
    let size = (pages(ckpt) * 3 / 2 + 3) * PAGE;
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (mnt, keep) = (d.path().join("mnt"), d.path().join("keep"));
    let out = mnt.join("pretrain");
    let Some(r) = full_disk(
        &mnt,
        &empty,
        &keep,
        size,
        PRETRAIN,
        &tiny_pretrain_args(&imgs, &out, "3"),
    ) else {
        eprintln!(
            "note: no mount namespaces here (unshare -rm refused); the full-disk check is skipped"
        );
        return;
    };
    r.assert_user_error("checkpoint.safetensors", &["No space left on device"]);
    eprintln!("{}", r.stderr.lines().last().unwrap());
    let kept = keep.join("pretrain");
    let files: Vec<String> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| !f.contains(".tmp.")),
        "temporaries left: {files:?}"
    );
    let bytes = std::fs::read(kept.join("checkpoint.safetensors")).unwrap();
    let st = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    let state = &st.metadata().as_ref().unwrap()["tsimcne.checkpoint"];
    assert!(state.contains("\"epochs_done\":1"), "{state}");
    // The same command, on a disk with room, resumes and ends where an
    // uninterrupted run does.
    let r = run(PRETRAIN, &tiny_pretrain_args(&imgs, &kept, "3"));
    assert!(r.ok(), "{}", r.stderr);
    assert!(
        !r.stderr.contains("epoch    1"),
        "resumed after epoch 1: {}",
        r.stderr
    );
    for f in [
        "model.safetensors",
        "features.parquet",
        "checkpoint.safetensors",
        "config.json",
    ] {
        assert!(
            std::fs::read(clean.join(f)).unwrap() == std::fs::read(kept.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

/// prep over an earlier table on a disk too small for the new one: the
/// error names the table and the disk, and the old table survives intact.
#[test]
fn full_disk_during_prep_keeps_the_old_table() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let old = images(&src, 20, "images.parquet");
    let old_bytes = std::fs::read(&old).unwrap();
    let (mnt, keep) = (d.path().join("mnt"), d.path().join("keep"));
    let data = repo_root().join("data/fashion-mnist");
    let target = mnt.join("images.parquet");
    let size = (pages(old_bytes.len() as u64) + 8) * PAGE;
    let args = [
        "fashion-mnist",
        "--input",
        s(&data),
        "--limit",
        "3000",
        "--out",
        s(&target),
    ];
    let Some(r) = full_disk(&mnt, &src, &keep, size, PREP, &args) else {
        eprintln!(
            "note: no mount namespaces here (unshare -rm refused); the full-disk check is skipped"
        );
        return;
    };
    r.assert_user_error("images.parquet", &["No space left on device"]);
    eprintln!("{}", r.stderr.trim());
    let files = snapshot(&keep);
    assert_eq!(files.len(), 1, "{:?}", files.keys().collect::<Vec<_>>());
    assert!(
        files[Path::new("images.parquet")] == old_bytes,
        "the old table changed"
    );
}
