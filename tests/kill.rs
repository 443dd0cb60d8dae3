//! kill -9 at seeded random moments, for every training stage (pretrain,
//! project, finetune on the tiny preset): each killed command is rerun until
//! it finishes, and the final files must be byte-identical to an
//! uninterrupted run with the same seed and thread count.
//!
//! Kills land three ways: at a random moment; right after a temporary of a
//! checkpoint or output write is seen (the writer is between creating its
//! temporary and renaming it); and, to cover the state such a kill leaves
//! whatever the timing, a half-written temporary of a dead process is
//! planted before some reruns.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tsimcne_rng::SplitMix64;

const PRETRAIN: &str = "pretrain";
const PROJECT: &str = "project";
const FINETUNE: &str = "finetune";

/// Kills per stage (3 stages).
const KILLS: usize = 8;
const EPOCHS: &str = "10";

/// The temporaries in `dir`: all, or those of process `pid`.
fn temporaries(dir: &Path, pid: Option<u32>) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| match pid {
                    Some(p) => n.ends_with(&format!(".tmp.{p}")),
                    None => n.contains(".tmp."),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn spawn(bin: &str, args: &[String]) -> Child {
    Command::new(stage(bin))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("binary starts")
}

/// Where in the run a kill lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// A random moment inside epoch k (augmenting, forward, backward, SGD).
    MidEpoch,
    /// As soon as epoch k's log.csv row is written: just before, during or
    /// just after its checkpoint write.
    AfterLog,
    /// While epoch k's checkpoint temporary exists: mid-write.
    CheckpointWrite,
    /// While a temporary of a final output (model, table, config) exists.
    OutputWrite,
}

/// What happened to the killed runs of one stage.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    /// Kills sent while the process had a temporary open (mid-write).
    during_write: usize,
    /// Write kills that found no temporary in time (the write was too
    /// quick to see); they still killed the process.
    missed_write: usize,
    planted: usize,
    /// The run finished before its last kill came.
    finished_early: bool,
    /// (kind of kill, checkpoint epoch after it).
    kills_at: Vec<(When, usize)>,
}

fn log_rows_done(out: &Path) -> usize {
    std::fs::read_to_string(out.join("log.csv")).map_or(0, |l| l.lines().count().saturating_sub(1))
}

/// The epoch of `out`'s checkpoint (0 without one).
fn checkpoint_epoch(out: &Path) -> usize {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(out.join("checkpoint.safetensors")) else {
        return 0;
    };
    // Only the header: an 8-byte length, then JSON.
    let mut len = [0u8; 8];
    f.read_exact(&mut len).expect("a whole checkpoint");
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header).expect("a whole checkpoint");
    let v: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(v["__metadata__"]["tsimcne.checkpoint"].as_str().unwrap()).unwrap();
    state["epochs_done"].as_u64().unwrap() as usize
}

const OUTPUTS: [&str; 5] = [
    "model.safetensors",
    "config.json",
    "features.parquet",
    "embedding.parquet",
    "checkpoint.safetensors",
];

/// Runs `bin args` (writing into `out`) to the end, killing it `KILLS`
/// times first, at epochs spread over the run.
fn run_with_kills(
    bin: &str,
    args: &[String],
    out: &Path,
    epoch_secs: f64,
    rng: &mut SplitMix64,
) -> Tally {
    let epochs: usize = EPOCHS.parse().unwrap();
    let mut t = Tally::default();
    for i in 0..KILLS {
        let when = if i + 1 == KILLS {
            When::OutputWrite
        } else {
            [When::MidEpoch, When::AfterLog, When::CheckpointWrite][(rng.next_u64() % 3) as usize]
        };
        let done = checkpoint_epoch(out);
        let k = (1 + i * epochs / KILLS).max(done + 1).min(epochs);
        let mut child = spawn(bin, args);
        let pid = child.id();
        let mine = |names: &[&str]| {
            temporaries(out, Some(pid))
                .iter()
                .any(|n| names.iter().any(|f| n.starts_with(&format!(".{f}.tmp."))))
        };
        let t0 = Instant::now();
        let mut fire_at: Option<Instant> = None;
        let mut seen = false;
        let mut polls = 0u64;
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{bin}: kill {i} never came"
            );
            polls += 1;
            // Write kills poll without sleeping once the write is near.
            let (fire, spin) = match when {
                When::MidEpoch => {
                    if fire_at.is_none() && (k == 1 || log_rows_done(out) >= k - 1) {
                        let d = Duration::from_secs_f64(epoch_secs * rng.unit_f64());
                        fire_at = Some(Instant::now() + d);
                    }
                    (fire_at.is_some_and(|f| Instant::now() >= f), false)
                }
                When::AfterLog => (log_rows_done(out) >= k, false),
                When::CheckpointWrite => {
                    if fire_at.is_some() || log_rows_done(out) >= k {
                        fire_at.get_or_insert_with(Instant::now);
                        seen = mine(&["checkpoint.safetensors"]);
                        // Seen, or written too fast to see (checked now and then).
                        let missed =
                            !seen && polls.is_multiple_of(16) && checkpoint_epoch(out) >= k;
                        t.missed_write += usize::from(missed);
                        (seen || missed, true)
                    } else {
                        (false, false)
                    }
                }
                When::OutputWrite => {
                    if log_rows_done(out) >= epochs {
                        seen = mine(&OUTPUTS[..4]);
                        (seen, true)
                    } else {
                        (false, false)
                    }
                }
            };
            if fire {
                break None;
            }
            if !spin {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        if let Some(status) = finished {
            // The run ended before its kill (a write too quick to catch):
            // it must have succeeded, and there is nothing left to kill.
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            assert!(status.success(), "{bin}: {err}");
            t.finished_early = true;
            return t;
        }
        if !seen {
            seen = !temporaries(out, Some(pid)).is_empty();
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "{bin} finished as it was killed");
        t.kills += 1;
        t.during_write += usize::from(seen);
        t.kills_at.push((when, checkpoint_epoch(out)));
        // Every other kill: also leave the debris of a writer killed in the
        // middle of a checkpoint and of a model write (a dead process's id).
        if i % 2 == 1 && out.is_dir() {
            for f in ["checkpoint.safetensors", "model.safetensors"] {
                std::fs::write(out.join(format!(".{f}.tmp.4194305")), b"half a file").unwrap();
            }
            t.planted += 1;
        }
    }
    let r = spawn(bin, args).wait_with_output().unwrap();
    assert!(
        r.status.success(),
        "{bin} rerun: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    t
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// log.csv without the timing columns (they differ run to run).
fn log_rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
        .collect()
}

fn assert_same(clean: &Path, killed: &Path, files: &[&str]) {
    for f in files {
        assert!(
            read(&clean.join(f)) == read(&killed.join(f)),
            "{}: {f} differs from the uninterrupted run",
            killed.display()
        );
    }
    assert_eq!(
        log_rows(clean),
        log_rows(killed),
        "{}: log.csv",
        killed.display()
    );
    let epochs: usize = EPOCHS.parse().unwrap();
    assert_eq!(
        log_rows(killed).len(),
        epochs + 1,
        "every epoch has its row"
    );
    let left = temporaries(killed, None);
    assert!(
        left.is_empty(),
        "{}: temporaries left: {left:?}",
        killed.display()
    );
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs the clean command; returns its wall time in seconds.
fn clean_run(bin: &str, args: &[String]) -> f64 {
    let t0 = Instant::now();
    let r = run(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.ok(), "{bin}: {}", r.stderr);
    t0.elapsed().as_secs_f64()
}

/// 32 images of 8×8, the smallest the tiny network takes: short epochs,
/// so many checkpoints (one per epoch) for the kills to land on.
fn tiny_table(path: &Path) {
    let mut rng = SplitMix64::new(8);
    let set = tsimcne_format::ImageSet {
        meta: tsimcne_format::ImageMeta {
            height: 8,
            width: 8,
            channels: 1,
            class_names: vec!["a".into(), "b".into()],
            coarse_class_names: None,
            source: "folder".into(),
            source_checksum: "md5:0".into(),
            subset: None,
        },
        splits: vec![tsimcne_format::Split::Train; 32],
        labels: (0..32).map(|i| Some(i % 2)).collect(),
        coarse_labels: Vec::new(),
        pixels: (0..32 * 64).map(|_| rng.next_u64() as u8).collect(),
        paths: Vec::new(),
    };
    tsimcne_format::write_image_table(path, &set).unwrap();
}

#[test]
fn kill_and_rerun_gives_byte_identical_files_in_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = d.join("images.parquet");
    tiny_table(&images);
    let common = |out: &Path| -> Vec<String> {
        owned(&[
            "--images",
            s(&images),
            "--out",
            s(out),
            "--epochs",
            EPOCHS,
            "--batch-size",
            "8",
            "--threads",
            "2",
            "--seed",
            "11",
        ])
    };
    let mut rng = SplitMix64::new(0x6b69_6c6c); // "kill"
    let mut tallies = Vec::new();
    let t_all = Instant::now();

    // pretrain
    let pre_args = |out: &Path| {
        let mut a = common(out);
        // Positives from pixel and feature neighbours, the feature list
        // recomputed every 3 epochs: a resume must pick up the list in use.
        a.extend(owned(&[
            "--backbone",
            "tiny",
            "--warmup",
            "2",
            "--knn-positives",
            "3",
            "--knn-space",
            "both",
            "--knn-refresh",
            "3",
        ]));
        a
    };
    let (pre, pre_k): (PathBuf, PathBuf) = (d.join("pretrain"), d.join("pretrain-killed"));
    let secs = clean_run(PRETRAIN, &pre_args(&pre));
    let epoch_secs = secs / EPOCHS.parse::<f64>().unwrap();
    tallies.push((
        "pretrain",
        secs,
        run_with_kills(PRETRAIN, &pre_args(&pre_k), &pre_k, epoch_secs, &mut rng),
    ));
    assert_same(
        &pre,
        &pre_k,
        &[
            "model.safetensors",
            "features.parquet",
            "checkpoint.safetensors",
            "config.json",
        ],
    );

    // project and finetune, each from the clean run of the stage before (so
    // the two runs' config.json agree byte for byte).
    let two_d = |from: &Path, out: &Path| {
        let mut a = common(out);
        a.extend(owned(&["--from", s(from)]));
        a
    };
    let mut from = pre.clone();
    // project with the recipe's positives, finetune with joint pixel and
    // feature neighbours (`--knn-space joint`) of its starting model and
    // the loss at a fixed map spread (`--map-scale`).
    for (name, bin) in [("project", PROJECT), ("finetune", FINETUNE)] {
        let (clean, killed) = (d.join(name), d.join(format!("{name}-killed")));
        let two_d = |from: &Path, out: &Path| {
            let mut a = two_d(from, out);
            if name == "finetune" {
                a.extend(owned(&[
                    "--knn-positives",
                    "3",
                    "--knn-space",
                    "joint",
                    "--map-scale",
                    "11",
                ]));
            }
            a
        };
        let secs = clean_run(bin, &two_d(&from, &clean));
        let epoch_secs = secs / EPOCHS.parse::<f64>().unwrap();
        tallies.push((
            name,
            secs,
            run_with_kills(bin, &two_d(&from, &killed), &killed, epoch_secs, &mut rng),
        ));
        assert_same(
            &clean,
            &killed,
            &[
                "model.safetensors",
                "embedding.parquet",
                "checkpoint.safetensors",
                "config.json",
            ],
        );
        from = clean;
    }

    let kills: usize = tallies.iter().map(|t| t.2.kills).sum();
    for (name, secs, t) in &tallies {
        eprintln!("{name}: clean run {secs:.2} s; {t:?}");
    }
    eprintln!("{kills} kills in {:.1} s", t_all.elapsed().as_secs_f64());
    assert!(
        kills >= 20,
        "only {kills} kills landed on a running process"
    );
    let during_write: usize = tallies.iter().map(|t| t.2.during_write).sum();
    assert!(
        during_write >= 3,
        "only {during_write} kills landed during a write"
    );
    let planted: usize = tallies.iter().map(|t| t.2.planted).sum();
    assert!(planted >= 3);
}

/// An absurd learning rate: the run stops in the epoch it diverges in,
/// with one line naming the epoch and step, and the checkpoint of the
/// epoch before (epoch 1, at lr 0 in the warm-up) stays as it was; a rerun
/// stops the same way and changes nothing.
#[test]
fn divergence_names_epoch_and_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images.parquet");
    tiny_table(&images);
    let out = dir.path().join("p");
    let args = [
        "--images",
        s(&images),
        "--out",
        s(&out),
        "--backbone",
        "tiny",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--lr",
        "1e30",
        "--threads",
        "2",
        "--seed",
        "1",
    ];
    let first = run(PRETRAIN, &args);
    first.assert_user_error(
        "epoch 2, step 4",
        &[
            "training diverged at",
            "is not finite",
            "the last good checkpoint is kept",
        ],
    );
    assert_eq!(checkpoint_epoch(&out), 1);
    let ckpt = read(&out.join("checkpoint.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&ckpt).unwrap();
    for (name, t) in st.tensors() {
        if t.dtype() == safetensors::Dtype::F32 {
            assert!(
                t.data()
                    .chunks(4)
                    .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
                "{name} in the kept checkpoint"
            );
        }
    }
    let second = run(PRETRAIN, &args);
    assert_eq!(second.code, Some(1));
    assert_eq!(second.stderr.lines().last(), first.stderr.lines().last());
    assert!(
        read(&out.join("checkpoint.safetensors")) == ckpt,
        "the checkpoint changed"
    );
    assert_eq!(log_rows_done(&out), 1);
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["checkpoint.safetensors", "log.csv"]);
}
