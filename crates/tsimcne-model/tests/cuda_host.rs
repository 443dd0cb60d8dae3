//! The GPU kernels (`src/cuda/kernels.cu`) run on the CPU against the CPU
//! path on the same inputs (batch norm: `tsimcne_ops::bn`; SGD:
//! tsimcne-train's loop), so that a change to them is checked on a machine
//! without a GPU. `tests/cuda_host/runner.cpp` compiles the kernel source
//! with a C++ compiler (`$CXX`, else `c++`) and `cuda_host/cuda_shim.h`,
//! which emulates the CUDA built-ins. The GPU contracts a * b + c into fused
//! multiply-adds where the host rounds twice, so batch-norm values are
//! compared within rounding; the SGD kernel rounds each operation alone and
//! must match bit for bit. `cuda_fast.rs` runs the same kernels on a GPU.
//! Without a compiler these tests skip with a note; CI sets
//! TSIMCNE_REQUIRE_CXX=1, so there they fail instead.

mod augment_cases;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tsimcne_model::BnSums;
use tsimcne_ops::bn::{BnStats, bn_train_backward, bn_train_forward};

const EPS: f64 = 1e-5;
const THREADS: usize = 256;

/// The runner, compiled once per test process; `None` without a compiler.
fn runner() -> Option<&'static PathBuf> {
    static RUNNER: OnceLock<Option<PathBuf>> = OnceLock::new();
    RUNNER
        .get_or_init(|| {
            let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host");
            let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_host_runner");
            let out = Command::new(&cxx)
                .args([
                    "-std=c++20",
                    "-O2",
                    "-ffp-contract=off",
                    "-Wall",
                    "-Werror",
                    "-o",
                ])
                .arg(&exe)
                .arg(dir.join("runner.cpp"))
                .output();
            match out {
                Ok(o) if o.status.success() => Some(exe),
                Ok(o) => panic!(
                    "{cxx} failed on the kernels:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => {
                    assert!(
                        std::env::var_os("TSIMCNE_REQUIRE_CXX").is_none(),
                        "TSIMCNE_REQUIRE_CXX is set but {cxx} does not run: {e}"
                    );
                    eprintln!("note: kernel check skipped: no C++ compiler ({cxx}: {e})");
                    None
                }
            }
        })
        .as_ref()
}

/// A script for the runner: buffers, launches, and the buffers to read back.
#[derive(Default)]
struct Script {
    bytes: Vec<u8>,
    gets: Vec<(String, usize)>,
}

impl Script {
    fn f32(&mut self, name: &str, v: &[f32]) -> &mut Self {
        writeln!(self.bytes, "f32 {name} {}", v.len()).unwrap();
        for x in v {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }
        self.bytes.push(b'\n');
        self
    }

    fn zeros(&mut self, name: &str, len: usize) -> &mut Self {
        self.f32(name, &vec![0.0; len])
    }

    fn f64(&mut self, name: &str, len: usize) -> &mut Self {
        writeln!(self.bytes, "f64 {name} {len}").unwrap();
        self
    }

    /// Launches `kernel` over `grid` blocks; `args` as the runner takes them.
    fn run(&mut self, kernel: &str, grid: (usize, usize), args: &[String]) -> &mut Self {
        writeln!(
            self.bytes,
            "run {kernel} {} {} {}",
            grid.0,
            grid.1,
            args.join(" ")
        )
        .unwrap();
        self
    }

    fn get(&mut self, name: &str, len: usize) -> &mut Self {
        writeln!(self.bytes, "get {name}").unwrap();
        self.gets.push((name.into(), len));
        self
    }

    /// Runs the script twice, each block's threads in index order and in
    /// reverse order, which must give the same bits (else the kernel's
    /// threads race); the buffers asked for, in order.
    fn exec(&self, exe: &PathBuf) -> Vec<Vec<f32>> {
        let forward = self.exec_once(exe, b"");
        let reverse = self.exec_once(exe, b"reverse\n");
        for ((name, _), (a, b)) in self.gets.iter().zip(forward.iter().zip(&reverse)) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(a) == bits(b),
                "{name}: the kernel's threads race (another order, another result)"
            );
        }
        forward
    }

    fn exec_once(&self, exe: &PathBuf, prefix: &[u8]) -> Vec<Vec<f32>> {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = [prefix, &self.bytes].concat();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "runner: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: usize = self.gets.iter().map(|g| g.1 * 4).sum();
        assert_eq!(out.stdout.len(), want, "runner output length");
        let mut at = 0;
        self.gets
            .iter()
            .map(|&(_, len)| {
                let v = out.stdout[at..at + 4 * len]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                at += 4 * len;
                v
            })
            .collect()
    }
}

fn i(v: usize) -> String {
    format!("i:{v}")
}

fn l(v: usize) -> String {
    format!("l:{v}")
}

fn d(v: f64) -> String {
    format!("d:{v:e}")
}

fn s(name: &str) -> String {
    name.to_string()
}

/// Values in about [-2, 3], a hash of `seed` and the index.
fn values(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64)
        .map(|k| {
            let h = (k ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (h % 5001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// NCHW `[n, c, hw]` → NHWC `[n·hw, c]`, the CPU path's layout.
fn nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(b * hw + p) * c + ch] = x[(b * c + ch) * hw + p];
            }
        }
    }
    out
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], rel: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (k, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (a - b).abs() <= rel * scale,
            "{what}[{k}]: kernels {a} vs CPU {b} (scale {scale})"
        );
    }
}

/// The shapes checked, `(n, c, hw)`: odd sizes, one channel, one pixel,
/// and channels larger than a part (16 × 33 × 17 > 8,192 elements).
const SHAPES: [(usize, usize, usize); 4] = [(3, 5, 37), (1, 1, 7), (4, 3, 1), (16, 2, 33 * 17)];

/// Part counts for a channel of `m` elements: one (the per-channel form),
/// the split form's, and counts that leave parts uneven or (on small
/// channels) empty.
fn part_counts(m: usize) -> Vec<usize> {
    let mut p = vec![1, 2, 7, BnSums::Split.parts(m)];
    if m < 100 {
        p.push(m + 3);
    }
    p.sort_unstable();
    p.dedup();
    p
}

/// The training-mode forward of `y = relu(bn(x) + res)` as the GPU
/// backbone launches it, with `parts` parts per channel.
fn forward(exe: &PathBuf, (n, c, hw): (usize, usize, usize), parts: usize) -> Vec<Vec<f32>> {
    let len = n * c * hw;
    let (x, res) = (values(len, 1), values(len, 2));
    let (gamma, beta) = (values(c, 3), values(c, 4));
    let mut sc = Script::default();
    sc.f32("x", &x)
        .f32("res", &res)
        .f32("gamma", &gamma)
        .f32("beta", &beta)
        .f64("part", 2 * c * parts);
    for b in ["mean", "var", "scale", "shift"] {
        sc.zeros(b, c);
    }
    sc.zeros("out", len)
        .run(
            "bn_stats_part",
            (c, parts),
            &[s("x"), i(n), i(c), i(hw), s("part")],
        )
        .run(
            "bn_stats_finish",
            (c.div_ceil(THREADS), 1),
            &[
                s("part"),
                i(parts),
                i(n),
                i(c),
                i(hw),
                s("gamma"),
                s("beta"),
                d(EPS),
                s("mean"),
                s("var"),
                s("scale"),
                s("shift"),
            ],
        )
        .run(
            "bn_apply",
            (len.div_ceil(THREADS), 1),
            &[
                s("x"),
                s("scale"),
                s("shift"),
                s("res"),
                i(1),
                i(1),
                i(c),
                i(hw),
                l(len),
                s("out"),
            ],
        )
        .get("mean", c)
        .get("var", c)
        .get("out", len);
    sc.exec(exe)
}

#[test]
fn batch_norm_forward_matches_the_cpu_path_for_any_part_count() {
    let Some(exe) = runner() else { return };
    for (n, c, hw) in SHAPES {
        let len = n * c * hw;
        let (x, res) = (values(len, 1), values(len, 2));
        let (gamma, beta) = (values(c, 3), values(c, 4));
        let mut out = vec![0.0; len];
        let stats = bn_train_forward(
            &nhwc(&x, n, c, hw),
            c,
            &gamma,
            &beta,
            EPS,
            Some(&nhwc(&res, n, c, hw)),
            true,
            &mut out,
        );
        for parts in part_counts(n * hw) {
            let what = format!("n {n} c {c} hw {hw} parts {parts}");
            let got = forward(exe, (n, c, hw), parts);
            assert_close(&format!("{what} mean"), &got[0], &stats.mean, 1e-6);
            assert_close(&format!("{what} var"), &got[1], &stats.var, 1e-6);
            assert_close(&format!("{what} out"), &nhwc(&got[2], n, c, hw), &out, 1e-5);
            assert!(got[2].iter().all(|&v| v >= 0.0), "{what}: the ReLU");
        }
    }
}

#[test]
fn batch_norm_backward_matches_the_cpu_path_for_any_part_count() {
    let Some(exe) = runner() else { return };
    for (n, c, hw) in SHAPES {
        let len = n * c * hw;
        let (x, dy) = (values(len, 5), values(len, 6));
        // y as the forward's ReLU output: zero where it cut.
        let y: Vec<f32> = values(len, 7).iter().map(|v| v.max(0.0)).collect();
        let gamma = values(c, 8);
        let stats = BnStats {
            mean: values(c, 9),
            var: values(c, 10).iter().map(|v| v.abs() + 0.1).collect(),
        };
        let (mut dx, mut dres) = (vec![0.0; len], vec![0.0; len]);
        let grads = bn_train_backward(
            &nhwc(&x, n, c, hw),
            Some(&nhwc(&y, n, c, hw)),
            &nhwc(&dy, n, c, hw),
            c,
            &gamma,
            &stats,
            EPS,
            &mut dx,
            Some(&mut dres),
        );
        for parts in part_counts(n * hw) {
            let what = format!("n {n} c {c} hw {hw} parts {parts}");
            let mut sc = Script::default();
            sc.f32("x", &x)
                .f32("y", &y)
                .f32("dy", &dy)
                .f32("gamma", &gamma)
                .f32("mean", &stats.mean)
                .f32("var", &stats.var)
                .f64("part", 2 * c * parts);
            for b in ["ca", "cb", "cd", "dgamma", "dbeta"] {
                sc.zeros(b, c);
            }
            let coef = [s("ca"), s("cb"), s("cd")];
            sc.zeros("dx", len)
                .zeros("dres", len)
                .run(
                    "bn_bwd_part",
                    (c, parts),
                    &[s("x"), s("y"), s("dy"), i(1), i(n), i(c), i(hw), s("part")],
                )
                .run(
                    "bn_bwd_finish",
                    (c.div_ceil(THREADS), 1),
                    &[
                        &[s("part"), i(parts), i(n), i(c), i(hw)],
                        &[s("gamma"), s("mean"), s("var"), d(EPS)][..],
                        &coef,
                        &[s("dgamma"), s("dbeta")],
                    ]
                    .concat(),
                )
                .run(
                    "bn_bwd_dx",
                    (len.div_ceil(THREADS), 1),
                    &[
                        &[s("x"), s("y"), s("dy"), i(1)][..],
                        &coef,
                        &[i(c), i(hw), l(len), s("dx"), s("dres"), i(1)],
                    ]
                    .concat(),
                )
                .get("dgamma", c)
                .get("dbeta", c)
                .get("dx", len)
                .get("dres", len);
            let got = sc.exec(exe);
            assert_close(&format!("{what} dgamma"), &got[0], &grads.gamma, 1e-6);
            assert_close(&format!("{what} dbeta"), &got[1], &grads.beta, 1e-6);
            assert_close(&format!("{what} dx"), &nhwc(&got[2], n, c, hw), &dx, 1e-5);
            assert_eq!(nhwc(&got[3], n, c, hw), dres, "{what} dres: the masked dy");
        }
    }
}

#[test]
fn one_part_per_channel_and_many_give_the_same_sums_within_rounding() {
    let Some(exe) = runner() else { return };
    let shape = (16, 2, 33 * 17);
    let one = forward(exe, shape, 1);
    let split = forward(exe, shape, BnSums::Split.parts(16 * 33 * 17));
    assert!(BnSums::Split.parts(16 * 33 * 17) > 1);
    assert_close("mean", &split[0], &one[0], 1e-7);
    assert_close("var", &split[1], &one[1], 1e-7);
}

#[test]
fn average_pool_and_its_backward_match_a_direct_sum() {
    let Some(exe) = runner() else { return };
    let (rows, hw) = (300, 9);
    let x = values(rows * hw, 11);
    let dout = values(rows, 12);
    let mut sc = Script::default();
    sc.f32("x", &x)
        .f32("d", &dout)
        .zeros("out", rows)
        .zeros("dx", rows * hw)
        .run(
            "avg_pool",
            (rows.div_ceil(THREADS), 1),
            &[s("x"), i(rows), i(hw), s("out")],
        )
        .run(
            "avg_pool_bwd",
            ((rows * hw).div_ceil(THREADS), 1),
            &[s("d"), i(hw), l(rows * hw), s("dx")],
        )
        .get("out", rows)
        .get("dx", rows * hw);
    let got = sc.exec(exe);
    let want: Vec<f32> = x
        .chunks_exact(hw)
        .map(|r| (r.iter().map(|&v| f64::from(v)).sum::<f64>() / hw as f64) as f32)
        .collect();
    assert_eq!(got[0], want, "avg_pool");
    let want_dx: Vec<f32> = (0..rows * hw)
        .map(|k| dout[k / hw] * (1.0 / hw as f32))
        .collect();
    assert_eq!(got[1], want_dx, "avg_pool_bwd");
}

/// tsimcne-train's CPU SGD loop (`sgd.rs`, `step_cpu`), element by element.
fn sgd_reference(w: &mut [f32], g: &[f32], buf: Option<(&mut [f32], bool)>, h: SgdHyper) {
    let (mut b, first) = match buf {
        Some((b, first)) => (Some(b), first),
        None => (None, false),
    };
    for k in 0..w.len() {
        let mut d = g[k];
        if let Some(clip) = h.clip {
            d = d.max(-clip).min(clip);
        }
        if h.wd != 0.0 {
            d += w[k] * h.wd;
        }
        if let Some(b) = b.as_deref_mut() {
            b[k] = if first { d } else { b[k] * h.mu + d };
            d = b[k];
        }
        w[k] -= d * h.lr;
    }
}

#[derive(Clone, Copy, Debug)]
struct SgdHyper {
    clip: Option<f32>,
    wd: f32,
    mu: f32,
    lr: f32,
}

#[test]
fn the_sgd_kernel_gives_the_cpu_loops_bits() {
    let Some(exe) = runner() else { return };
    let len = 1000;
    let w0: Vec<f32> = values(len, 21).iter().map(|v| v * 0.3).collect();
    let mut g = values(len, 22);
    (g[3], g[4], g[5]) = (f32::NAN, f32::INFINITY, 7.5);
    let b0 = values(len, 23);
    let hypers = [
        SgdHyper {
            clip: Some(4.0),
            wd: 5e-4,
            mu: 0.9,
            lr: 0.06,
        },
        SgdHyper {
            clip: None,
            wd: 0.0,
            mu: 0.9,
            lr: 0.3,
        },
        SgdHyper {
            clip: Some(1.5),
            wd: 1e-3,
            mu: 0.0,
            lr: 0.01,
        },
    ];
    for h in hypers {
        for first in [true, false] {
            let momentum = h.mu != 0.0;
            let (mut w, mut b) = (w0.clone(), b0.clone());
            sgd_reference(&mut w, &g, momentum.then_some((&mut b[..], first)), h);
            let mut sc = Script::default();
            sc.f32("w", &w0).f32("g", &g).f32("buf", &b0).run(
                "sgd_step",
                (len.div_ceil(THREADS), 1),
                &[
                    s("w"),
                    s("g"),
                    s("buf"),
                    l(len),
                    i(usize::from(h.clip.is_some())),
                    format!("f:{:e}", h.clip.unwrap_or(0.0)),
                    format!("f:{:e}", h.wd),
                    i(usize::from(momentum)),
                    format!("f:{:e}", h.mu),
                    i(usize::from(first)),
                    format!("f:{:e}", h.lr),
                ],
            );
            let got = sc.get("w", len).get("buf", len).exec(exe);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[0]), bits(&w), "{h:?} first {first}: weights");
            assert_eq!(
                bits(&got[1]),
                bits(&b),
                "{h:?} first {first}: momentum buffer"
            );
        }
    }
}

/// `len` pixel bytes, a hash of `seed` and the index.
fn pixels(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|k| ((k ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

fn ints(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Script {
    fn raw(&mut self, kind: &str, name: &str, len: usize, bytes: &[u8]) -> &mut Self {
        writeln!(self.bytes, "{kind} {name} {len}").unwrap();
        self.bytes.extend_from_slice(bytes);
        self.bytes.push(b'\n');
        self
    }
}

/// `views` views of the u8 HWC `images` by the augmentation kernel from
/// their packed parameters, with `cfg`'s normalisation.
fn augment_on_host(
    exe: &PathBuf,
    images: &[u8],
    shape: tsimcne_augment::Shape,
    (vint, vfloat): (&[i32], &[f32]),
    cfg: &tsimcne_augment::AugmentConfig,
    views: usize,
) -> Vec<f32> {
    let c = shape.channels;
    let (mean, std) = cfg
        .normalize
        .clone()
        .unwrap_or((vec![0.0; c], vec![1.0; c]));
    let len = views * shape.len();
    let mut sc = Script::default();
    sc.raw("u8", "images", images.len(), images)
        .raw("i32", "vint", vint.len(), &ints(vint))
        .f32("vfloat", vfloat)
        .f32("mean", &mean)
        .f32("std", &std)
        .zeros("tmp", len)
        .zeros("out", len)
        .run(
            "augment_views",
            (views, 1),
            &[
                s("images"),
                i(shape.height),
                i(shape.width),
                i(shape.channels),
                s("vint"),
                s("vfloat"),
                i(usize::from(cfg.normalize.is_some())),
                s("mean"),
                s("std"),
                s("tmp"),
                s("out"),
            ],
        )
        .get("out", len);
    sc.exec(exe).remove(0)
}

#[test]
fn the_augmentation_kernel_gives_the_cpu_views_bits() {
    use tsimcne_augment::{Scratch, Shape, apply, pack_view, sample_params, view_stream};
    let Some(exe) = runner() else { return };
    let (jittery, normalised) = (augment_cases::jittery(), augment_cases::normalised());
    let cases = [
        (
            Shape {
                height: 13,
                width: 9,
                channels: 3,
            },
            jittery.clone(),
        ),
        (
            Shape {
                height: 8,
                width: 8,
                channels: 1,
            },
            jittery,
        ),
        (
            Shape {
                height: 16,
                width: 11,
                channels: 3,
            },
            normalised,
        ),
    ];
    for (shape, cfg) in cases {
        let (n, views) = (5, 24);
        let images = pixels(n * shape.len(), shape.len() as u64);
        let (mut vint, mut vfloat, mut want) = (Vec::new(), Vec::new(), Vec::new());
        let mut scratch = Scratch::default();
        for v in 0..views {
            let image = (v * 3) % n;
            let p = sample_params(&mut view_stream(7, 1, image as u64, v as u64), shape, &cfg);
            let (a, b) = pack_view(image, &p);
            vint.extend(a);
            vfloat.extend(b);
            let mut out = vec![0.0; shape.len()];
            let src = &images[image * shape.len()..(image + 1) * shape.len()];
            apply(src, shape, &p, &cfg, &mut scratch, &mut out);
            want.extend(out);
        }
        let got = augment_on_host(exe, &images, shape, (&vint, &vfloat), &cfg, views);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{shape:?} view {} element {}: kernel {a} vs CPU {b}",
                k / shape.len(),
                k % shape.len()
            );
        }
    }
}

#[test]
fn packed_batches_give_two_views_of_bits() {
    use tsimcne_augment::{AugmentConfig, Shape, pack_two_views, two_views_of};
    let Some(exe) = runner() else { return };
    let shape = Shape {
        height: 10,
        width: 12,
        channels: 3,
    };
    let cfg = AugmentConfig::default();
    let n_images = 9;
    let images = pixels(n_images * shape.len(), 99);
    let row = |i: usize| &images[i * shape.len()..(i + 1) * shape.len()];
    // A batch of 4 whose second views come from partner rows.
    let (first, second) = ([3usize, 0, 7, 5], [4usize, 8, 7, 1]);
    let ids: Vec<u64> = first.iter().map(|&i| i as u64).collect();
    let mut want = vec![0.0; 2 * 4 * shape.len()];
    let imgs: Vec<&[u8]> = first.iter().map(|&i| row(i)).collect();
    let partners: Vec<&[u8]> = second.iter().map(|&i| row(i)).collect();
    two_views_of(&imgs, &partners, &ids, shape, &cfg, 3, 2, 2, &mut want);
    let (vint, vfloat) = pack_two_views(&first, &second, &ids, shape, &cfg, 3, 2);
    let got = augment_on_host(exe, &images, shape, (&vint, &vfloat), &cfg, 8);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&got) == bits(&want),
        "the kernel's batch differs from two_views_of's"
    );
}
