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

use tsimcne_model::{BnSums, FastDiv, MemoryFormat};
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

    /// A bfloat16 buffer of `v` rounded to nearest even (`half`'s rounding).
    fn bf16(&mut self, name: &str, v: &[f32]) -> &mut Self {
        writeln!(self.bytes, "bf16 {name} {}", v.len()).unwrap();
        for &x in v {
            self.bytes
                .extend_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes());
        }
        self.bytes.push(b'\n');
        self
    }

    /// An activation buffer of `v` in `storage`.
    fn act(&mut self, name: &str, v: &[f32], storage: Storage) -> &mut Self {
        match storage {
            Storage::F32 => self.f32(name, v),
            Storage::Bf16 => self.bf16(name, v),
        }
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

fn u(v: u32) -> String {
    format!("u:{v}")
}

fn s(name: &str) -> String {
    name.to_string()
}

/// A batch-norm kernel's layout and index arithmetic: NCHW by 64-bit
/// division (`c, hw`) or by multiply and shift (the `_fast` kernels,
/// `FastIndex`); channels-last (the `_nhwc` kernels) likewise (`LastIndex`,
/// `LastFastIndex`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ix {
    Wide,
    Fast,
    LastWide,
    LastFast,
}

const INDEXES: [Ix; 4] = [Ix::Wide, Ix::Fast, Ix::LastWide, Ix::LastFast];

/// How activations are stored: float, or bfloat16 (the `_bf16` kernels).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    F32,
    Bf16,
}

impl Storage {
    /// The kernels' name suffix for this storage.
    fn suffix(self) -> &'static str {
        match self {
            Storage::F32 => "",
            Storage::Bf16 => "_bf16",
        }
    }

    /// `v` as this storage holds it (bf16: rounded to nearest even).
    fn held(self, v: Vec<f32>) -> Vec<f32> {
        match self {
            Storage::F32 => v,
            Storage::Bf16 => v
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_f32())
                .collect(),
        }
    }
}

/// A batch-norm kernel's form: its index arithmetic and storage.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Form {
    ix: Ix,
    storage: Storage,
}

impl Form {
    const F32: [Form; 4] = [
        Form::f32(Ix::Wide),
        Form::f32(Ix::Fast),
        Form::f32(Ix::LastWide),
        Form::f32(Ix::LastFast),
    ];

    const fn f32(ix: Ix) -> Self {
        Form {
            ix,
            storage: Storage::F32,
        }
    }

    fn storage_suffix(self) -> &'static str {
        self.storage.suffix()
    }

    /// An elementwise kernel's name.
    fn kernel(self, name: &str) -> String {
        let ix = match self.ix {
            Ix::Wide => "",
            Ix::Fast => "_fast",
            Ix::LastWide => "_nhwc",
            Ix::LastFast => "_nhwc_fast",
        };
        format!("{name}{ix}{}", self.storage_suffix())
    }

    /// A partial-sums kernel `name` over `parts` parts of a `[n, c, hw]`
    /// tensor, as the GPU backbone launches it: its name, grid and the
    /// arguments between the activations and the partial sums.
    fn part_launch(
        self,
        name: &str,
        (n, c, hw): (usize, usize, usize),
        parts: usize,
    ) -> (String, (usize, usize), Vec<String>) {
        if self.ix.last() {
            let kernel = format!("{name}_nhwc{}", self.storage_suffix());
            let tiles = c.div_ceil(MemoryFormat::TILE);
            (kernel, (tiles, parts), vec![i(n), i(c), i(hw)])
        } else {
            let args = [vec![i(n)], self.ix.args(c, hw)].concat();
            (self.kernel(name), (c, parts), args)
        }
    }

    /// `v`, an NCHW `[n, c, hw]` tensor, in the form's layout.
    fn layout(self, v: &[f32], (n, c, hw): (usize, usize, usize)) -> Vec<f32> {
        if self.ix.last() {
            nhwc(v, n, c, hw)
        } else {
            v.to_vec()
        }
    }

    /// `v`, in the form's layout, as NCHW.
    fn unlayout(self, v: Vec<f32>, (n, c, hw): (usize, usize, usize)) -> Vec<f32> {
        if self.ix.last() {
            nchw(&v, n, c, hw)
        } else {
            v
        }
    }
}

impl Ix {
    fn last(self) -> bool {
        matches!(self, Ix::LastWide | Ix::LastFast)
    }

    /// The index's arguments for a `[n, c, hw]` tensor.
    fn args(self, c: usize, hw: usize) -> Vec<String> {
        let fast = |dims: &[usize]| -> Vec<String> {
            dims.iter()
                .map(|&d| FastDiv::new(d as u64).expect("a divisor"))
                .flat_map(|f| [u(f.d), u(f.mul), u(f.shift)])
                .collect()
        };
        match self {
            Ix::Wide => vec![i(c), i(hw)],
            Ix::Fast => fast(&[c, hw]),
            Ix::LastWide => vec![i(c)],
            Ix::LastFast => fast(&[c]),
        }
    }
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

/// NHWC `[n·hw, c]` → NCHW `[n, c, hw]`: the same transpose of each image
/// with the two inner dimensions' roles swapped.
fn nchw(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    nhwc(x, n, hw, c)
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
/// channels larger than a part (16 × 33 × 17 > 8,192 elements), and more
/// channels than a channels-last tile (the last tile part-filled).
const SHAPES: [(usize, usize, usize); 6] = [
    (3, 5, 37),
    (1, 1, 7),
    (4, 3, 1),
    (16, 2, 33 * 17),
    (2, 40, 9),
    (5, 70, 3),
];

/// Part counts for `m` rows of `c` channels: one (the per-channel form),
/// the split form's, the channels-last form's, and counts that leave parts
/// uneven or (on small channels) empty.
fn part_counts(m: usize, c: usize) -> Vec<usize> {
    let mut p = vec![1, 2, 7, BnSums::Split.parts(m), MemoryFormat::parts(m, c)];
    if m < 100 {
        p.push(m + 3);
    }
    p.sort_unstable();
    p.dedup();
    p
}

/// The inputs of the forward checks: x and res as `inputs` holds them,
/// gamma and beta.
fn forward_inputs(
    len: usize,
    c: usize,
    inputs: Storage,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (x, res) = (inputs.held(values(len, 1)), inputs.held(values(len, 2)));
    (x, res, values(c, 3), values(c, 4))
}

/// The training-mode forward of `y = relu(bn(x) + res)` as the GPU
/// backbone launches it, with `parts` parts per channel: mean, variance,
/// output.
///
/// The activations are drawn as `inputs` holds them (bf16: rounded), so
/// that a float form and a bf16 form can run on the same values.
fn forward(
    exe: &PathBuf,
    (n, c, hw): (usize, usize, usize),
    parts: usize,
    form: Form,
    inputs: Storage,
) -> Vec<Vec<f32>> {
    let shape = (n, c, hw);
    let len = n * c * hw;
    let (ix, st) = (form.ix, form.storage);
    assert!(st == Storage::F32 || inputs == Storage::Bf16);
    let (x, res, gamma, beta) = forward_inputs(len, c, inputs);
    let mut sc = Script::default();
    sc.act("x", &form.layout(&x, shape), st)
        .act("res", &form.layout(&res, shape), st)
        .f32("gamma", &gamma)
        .f32("beta", &beta)
        .f64("part", 2 * c * parts);
    for b in ["mean", "var", "scale", "shift"] {
        sc.zeros(b, c);
    }
    let (part_kernel, part_grid, part_args) = form.part_launch("bn_stats_part", shape, parts);
    sc.act("out", &vec![0.0; len], st)
        .run(
            &part_kernel,
            part_grid,
            &[vec![s("x")], part_args, vec![s("part")]].concat(),
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
            &form.kernel("bn_apply"),
            (len.div_ceil(THREADS), 1),
            &[
                vec![s("x"), s("scale"), s("shift"), s("res"), i(1), i(1)],
                ix.args(c, hw),
                vec![l(len), s("out")],
            ]
            .concat(),
        )
        .get("mean", c)
        .get("var", c)
        .get("out", len);
    let mut got = sc.exec(exe);
    got[2] = form.unlayout(std::mem::take(&mut got[2]), shape);
    got
}

#[test]
fn batch_norm_forward_matches_the_cpu_path_for_any_part_count() {
    let Some(exe) = runner() else { return };
    for (n, c, hw) in SHAPES {
        let len = n * c * hw;
        let (x, res, gamma, beta) = forward_inputs(len, c, Storage::F32);
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
        for (parts, form) in part_counts(n * hw, c)
            .into_iter()
            .flat_map(|p| Form::F32.map(|f| (p, f)))
        {
            let what = format!("n {n} c {c} hw {hw} parts {parts} {form:?}");
            let got = forward(exe, (n, c, hw), parts, form, Storage::F32);
            assert_close(&format!("{what} mean"), &got[0], &stats.mean, 1e-6);
            assert_close(&format!("{what} var"), &got[1], &stats.var, 1e-6);
            assert_close(&format!("{what} out"), &nhwc(&got[2], n, c, hw), &out, 1e-5);
            assert!(got[2].iter().all(|&v| v >= 0.0), "{what}: the ReLU");
        }
    }
}

/// The inputs of the backward checks: x, y (a ReLU output), dy, gamma and
/// the batch statistics.
/// The activations as `inputs` holds them.
fn backward_inputs(
    len: usize,
    c: usize,
    inputs: Storage,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, BnStats) {
    let (x, dy) = (inputs.held(values(len, 5)), inputs.held(values(len, 6)));
    // y as the forward's ReLU output: zero where it cut.
    let y: Vec<f32> = inputs.held(values(len, 7).iter().map(|v| v.max(0.0)).collect());
    let stats = BnStats {
        mean: values(c, 9),
        var: values(c, 10).iter().map(|v| v.abs() + 0.1).collect(),
    };
    (x, y, dy, values(c, 8), stats)
}

/// The backward of `y = relu(bn(x) + res)` as the GPU backbone launches
/// it, with `parts` parts per channel: dgamma, dbeta, dx, dres.
fn backward(
    exe: &PathBuf,
    (n, c, hw): (usize, usize, usize),
    parts: usize,
    form: Form,
    inputs: Storage,
) -> Vec<Vec<f32>> {
    let shape = (n, c, hw);
    let len = n * c * hw;
    let (ix, st) = (form.ix, form.storage);
    assert!(st == Storage::F32 || inputs == Storage::Bf16);
    let (x, y, dy, gamma, stats) = backward_inputs(len, c, inputs);
    let mut sc = Script::default();
    sc.act("x", &form.layout(&x, shape), st)
        .act("y", &form.layout(&y, shape), st)
        .act("dy", &form.layout(&dy, shape), st)
        .f32("gamma", &gamma)
        .f32("mean", &stats.mean)
        .f32("var", &stats.var)
        .f64("part", 2 * c * parts);
    for b in ["ca", "cb", "cd", "dgamma", "dbeta"] {
        sc.zeros(b, c);
    }
    let coef = [s("ca"), s("cb"), s("cd")];
    let (part_kernel, part_grid, part_args) = form.part_launch("bn_bwd_part", shape, parts);
    sc.act("dx", &vec![0.0; len], st)
        .act("dres", &vec![0.0; len], st)
        .run(
            &part_kernel,
            part_grid,
            &[
                vec![s("x"), s("y"), s("dy"), i(1)],
                part_args,
                vec![s("part")],
            ]
            .concat(),
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
            &form.kernel("bn_bwd_dx"),
            (len.div_ceil(THREADS), 1),
            &[
                vec![s("x"), s("y"), s("dy"), i(1)],
                coef.to_vec(),
                ix.args(c, hw),
                vec![l(len), s("dx"), s("dres"), i(1)],
            ]
            .concat(),
        )
        .get("dgamma", c)
        .get("dbeta", c)
        .get("dx", len)
        .get("dres", len);
    let mut got = sc.exec(exe);
    for k in [2, 3] {
        got[k] = form.unlayout(std::mem::take(&mut got[k]), shape);
    }
    got
}

#[test]
fn batch_norm_backward_matches_the_cpu_path_for_any_part_count() {
    let Some(exe) = runner() else { return };
    for (n, c, hw) in SHAPES {
        let len = n * c * hw;
        let (x, y, dy, gamma, stats) = backward_inputs(len, c, Storage::F32);
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
        for (parts, form) in part_counts(n * hw, c)
            .into_iter()
            .flat_map(|p| Form::F32.map(|f| (p, f)))
        {
            let what = format!("n {n} c {c} hw {hw} parts {parts} {form:?}");
            let got = backward(exe, (n, c, hw), parts, form, Storage::F32);
            assert_close(&format!("{what} dgamma"), &got[0], &grads.gamma, 1e-6);
            assert_close(&format!("{what} dbeta"), &got[1], &grads.beta, 1e-6);
            assert_close(&format!("{what} dx"), &nhwc(&got[2], n, c, hw), &dx, 1e-5);
            assert_eq!(nhwc(&got[3], n, c, hw), dres, "{what} dres: the masked dy");
        }
    }
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|b| b.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// Both index forms compute the same integers, so every output must have
/// the same bits, for every shape and part count.
#[test]
fn the_fast_index_kernels_give_the_wide_ones_bits() {
    let Some(exe) = runner() else { return };
    let [wide, fast, last_wide, last_fast] = Form::F32;
    for shape @ (n, c, hw) in SHAPES {
        for parts in part_counts(n * hw, c) {
            for (wide, fast) in [(wide, fast), (last_wide, last_fast)] {
                let what = format!("n {n} c {c} hw {hw} parts {parts} {fast:?}");
                let f = |form| forward(exe, shape, parts, form, Storage::F32);
                assert_eq!(bits(&f(fast)), bits(&f(wide)), "{what} forward");
                let b = |form| backward(exe, shape, parts, form, Storage::F32);
                assert_eq!(bits(&b(fast)), bits(&b(wide)), "{what} backward");
            }
        }
    }
}

/// On values that bf16 holds exactly, the bf16 kernels sum the same values
/// in the same order as the float ones, so the statistics and parameter
/// gradients have the same bits, and each stored activation is the float
/// kernel's rounded to bf16 (the residual's gradient, a masked dy, is
/// exact).
#[test]
fn the_bf16_kernels_give_the_float_ones_bits_rounded() {
    let Some(exe) = runner() else { return };
    let rounded = |v: &[f32]| Storage::Bf16.held(v.to_vec());
    for (at, shape @ (n, c, hw)) in SHAPES.into_iter().enumerate() {
        // Each part count with one index form, a shape's forms starting one
        // further than the last shape's, so that all meet across the shapes.
        let forms = INDEXES.into_iter().cycle().skip(at);
        for (parts, ix) in part_counts(n * hw, c).into_iter().zip(forms) {
            let what = format!("n {n} c {c} hw {hw} parts {parts} {ix:?}");
            let float = Form::f32(ix);
            let half = Form {
                ix,
                storage: Storage::Bf16,
            };
            let f = forward(exe, shape, parts, float, Storage::Bf16);
            let h = forward(exe, shape, parts, half, Storage::Bf16);
            assert_eq!(bits(&h[..2]), bits(&f[..2]), "{what} mean and var");
            assert_eq!(bits(&h[2..]), bits(&[rounded(&f[2])]), "{what} out");
            let f = backward(exe, shape, parts, float, Storage::Bf16);
            let h = backward(exe, shape, parts, half, Storage::Bf16);
            assert_eq!(bits(&h[..2]), bits(&f[..2]), "{what} dgamma and dbeta");
            assert_eq!(bits(&h[2..3]), bits(&[rounded(&f[2])]), "{what} dx");
            assert_eq!(bits(&h[3..]), bits(&f[3..]), "{what} dres");
        }
    }
}

/// `to_bf16` rounds as `half` does (to nearest, ties to even; overflow to
/// infinity; NaN stays NaN), and `from_bf16` widens exactly.
#[test]
fn the_bf16_conversions_round_to_nearest_even() {
    let Some(exe) = runner() else { return };
    let mut v: Vec<f32> = [
        0.0,
        -0.0,
        1.0,
        -1.5,
        f32::MIN_POSITIVE,
        1e-40,
        -1e-45,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ]
    .to_vec();
    // Ties and their neighbours, both parities of the kept bit.
    for base in [0x3F80_0000u32, 0x3F81_0000, 0xC2F6_0000, 0x7F7F_0000] {
        for low in [0x7FFFu32, 0x8000, 0x8001, 0x0001, 0xFFFF] {
            v.push(f32::from_bits(base | low));
        }
    }
    v.extend(values(300, 11).iter().map(|x| x * 1234.5));
    let len = v.len();
    let mut sc = Script::default();
    sc.f32("x", &v)
        .bf16("h", &vec![0.0; len])
        .zeros("back", len)
        .run(
            "to_bf16",
            (len.div_ceil(THREADS), 1),
            &[s("x"), l(len), s("h")],
        )
        .run(
            "from_bf16",
            (len.div_ceil(THREADS), 1),
            &[s("h"), l(len), s("back")],
        )
        .get("h", len)
        .get("back", len);
    let got = sc.exec(exe);
    for (k, &x) in v.iter().enumerate() {
        let want = half::bf16::from_f32(x).to_f32();
        if x.is_nan() {
            assert!(got[0][k].is_nan() && got[1][k].is_nan(), "{x}: NaN");
        } else {
            assert_eq!(
                got[0][k].to_bits(),
                want.to_bits(),
                "{x:e} ({:#010x})",
                x.to_bits()
            );
            assert_eq!(got[1][k].to_bits(), want.to_bits(), "{x:e}: widened");
        }
    }
}

#[test]
fn one_part_per_channel_and_many_give_the_same_sums_within_rounding() {
    let Some(exe) = runner() else { return };
    let shape = (16, 2, 33 * 17);
    let [wide, fast, ..] = Form::F32;
    let one = forward(exe, shape, 1, wide, Storage::F32);
    let split = forward(
        exe,
        shape,
        BnSums::Split.parts(16 * 33 * 17),
        fast,
        Storage::F32,
    );
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

/// The channels-last pool sums each mean in NCHW's order, so it gives
/// `avg_pool`'s bits on the transposed input, in either storage; its
/// backward gives `avg_pool_bwd`'s, transposed.
#[test]
fn the_channels_last_pool_gives_the_nchw_pools_bits() {
    let Some(exe) = runner() else { return };
    let (n, c, hw) = (7, 45, 9);
    let (rows, len) = (n * c, n * c * hw);
    let x = Storage::Bf16.held(values(len, 13));
    let dout = values(rows, 14);
    for storage in [Storage::F32, Storage::Bf16] {
        let mut sc = Script::default();
        sc.act("x", &x, storage)
            .act("xl", &nhwc(&x, n, c, hw), storage)
            .f32("d", &dout)
            .zeros("out", rows)
            .zeros("outl", rows)
            .act("dx", &vec![0.0; len], storage)
            .act("dxl", &vec![0.0; len], storage);
        let grid = |len: usize| (len.div_ceil(THREADS), 1);
        let st = storage.suffix();
        sc.run(
            &format!("avg_pool{st}"),
            grid(rows),
            &[s("x"), i(rows), i(hw), s("out")],
        )
        .run(
            &format!("avg_pool_nhwc{st}"),
            grid(rows),
            &[s("xl"), i(rows), i(c), i(hw), s("outl")],
        )
        .run(
            &format!("avg_pool_bwd{st}"),
            grid(len),
            &[s("d"), i(hw), l(len), s("dx")],
        )
        .run(
            &format!("avg_pool_bwd_nhwc{st}"),
            grid(len),
            &[s("d"), i(c), i(hw), l(len), s("dxl")],
        )
        .get("out", rows)
        .get("outl", rows)
        .get("dx", len)
        .get("dxl", len);
        let got = sc.exec(exe);
        assert_eq!(bits(&got[1..2]), bits(&got[..1]), "{storage:?} pool");
        assert_eq!(
            bits(&[nchw(&got[3], n, c, hw)]),
            bits(&got[2..3]),
            "{storage:?} pool backward"
        );
    }
}

/// `to_nhwc` transposes NCHW to channels-last (rounding to bf16 in its
/// bf16 form, as `half` does), for images and for convolution weights
/// (`[cout, cin, k·k]`), and `from_nhwc` transposes back, exactly.
#[test]
fn the_layout_conversions_transpose_exactly() {
    let Some(exe) = runner() else { return };
    for (n, c, hw) in [(3, 3, 35), (64, 32, 9), (5, 1, 4), (2, 7, 1)] {
        let len = n * c * hw;
        let x: Vec<f32> = values(len, 15).iter().map(|v| v * 1.37).collect();
        for storage in [Storage::F32, Storage::Bf16] {
            let st = storage.suffix();
            let grid = (len.div_ceil(THREADS), 1);
            let mut sc = Script::default();
            sc.f32("x", &x)
                .act("y", &vec![0.0; len], storage)
                .zeros("back", len)
                .run(
                    &format!("to_nhwc{st}"),
                    grid,
                    &[s("x"), i(c), i(hw), l(len), s("y")],
                )
                .run(
                    &format!("from_nhwc{st}"),
                    grid,
                    &[s("y"), i(c), i(hw), l(len), s("back")],
                )
                .get("y", len)
                .get("back", len);
            let got = sc.exec(exe);
            let what = format!("{storage:?} n {n} c {c} hw {hw}");
            let want = storage.held(nhwc(&x, n, c, hw));
            assert_eq!(bits(&got[..1]), bits(&[want]), "{what}: to_nhwc");
            assert_eq!(
                bits(&got[1..]),
                bits(&[storage.held(x.clone())]),
                "{what}: from_nhwc"
            );
        }
    }
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

/// One launch steps parameters of several sizes (one empty), each with its
/// own `first` flag; every one must get the CPU loop's bits.
#[test]
fn the_sgd_kernel_gives_the_cpu_loops_bits() {
    let Some(exe) = runner() else { return };
    let lens = [1000usize, 0, 7, 300, 1];
    let w0: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(t, &len)| values(len, 21 + t as u64).iter().map(|v| v * 0.3).collect())
        .collect();
    let mut g: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(t, &len)| values(len, 31 + t as u64))
        .collect();
    (g[0][3], g[0][4], g[0][5]) = (f32::NAN, f32::INFINITY, 7.5);
    let b0: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(t, &len)| values(len, 41 + t as u64))
        .collect();
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
    let start: Vec<i64> = std::iter::once(0)
        .chain(lens.iter().scan(0i64, |at, &len| {
            *at += len as i64;
            Some(*at)
        }))
        .collect();
    let total = start[lens.len()] as usize;
    for h in hypers {
        for firsts in [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]] {
            let momentum = h.mu != 0.0;
            let mut sc = Script::default();
            let names = |what: &str| {
                (0..lens.len())
                    .map(|t| format!("{what}{t}"))
                    .collect::<Vec<_>>()
            };
            let (wn, gn, bn) = (names("w"), names("g"), names("b"));
            for t in 0..lens.len() {
                sc.f32(&wn[t], &w0[t])
                    .f32(&gn[t], &g[t])
                    .f32(&bn[t], &b0[t]);
            }
            // The kernel's one table: the pointers, the starts, the flags.
            let mut table: Vec<String> = [&wn, &gn, &bn].into_iter().flatten().cloned().collect();
            table.extend(start.iter().map(|&v| l(v as usize)));
            table.extend(firsts.iter().map(|&f| l(f as usize)));
            writeln!(sc.bytes, "table params {}", table.join(" ")).unwrap();
            sc.run(
                "sgd_step",
                (total.div_ceil(THREADS), 1),
                &[
                    s("params"),
                    i(lens.len()),
                    i(usize::from(h.clip.is_some())),
                    format!("f:{:e}", h.clip.unwrap_or(0.0)),
                    format!("f:{:e}", h.wd),
                    i(usize::from(momentum)),
                    format!("f:{:e}", h.mu),
                    format!("f:{:e}", h.lr),
                ],
            );
            for t in 0..lens.len() {
                sc.get(&wn[t], lens[t]).get(&bn[t], lens[t]);
            }
            let got = sc.exec(exe);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for t in 0..lens.len() {
                let (mut w, mut b) = (w0[t].clone(), b0[t].clone());
                let first = firsts[t] == 1;
                sgd_reference(&mut w, &g[t], momentum.then_some((&mut b[..], first)), h);
                let what = format!("{h:?} parameter {t} first {first}");
                assert_eq!(bits(&got[2 * t]), bits(&w), "{what}: weights");
                assert_eq!(bits(&got[2 * t + 1]), bits(&b), "{what}: momentum buffer");
            }
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

/// The loss kernels (`nce_cauchy_rows`, `nce_cauchy_grad`, with
/// `fixed_scale_fwd` and `fixed_scale_bwd` around them for a map scale)
/// on views `z` `[rows, dim]`, launched as `tsimcne_model::cuda`'s
/// `info_nce_cauchy` launches them: the loss and its gradient by `z`.
fn loss_on_kernels(
    exe: &PathBuf,
    z: &[f32],
    rows: usize,
    dim: usize,
    map_scale: Option<f64>,
) -> (f32, Vec<f32>) {
    let mut sc = Script::default();
    sc.f32("z", z);
    let input = match map_scale {
        Some(scale) => {
            sc.f64("st", 2 * dim + 1).zeros("y", rows * dim).run(
                "fixed_scale_fwd",
                (1, 1),
                &[s("z"), i(rows), i(dim), d(scale), s("st"), s("y")],
            );
            "y"
        }
        None => "z",
    };
    sc.zeros("a", rows * rows)
        .f64("rl", rows)
        .zeros("g", rows * dim)
        .zeros("loss", 1)
        .run(
            "nce_cauchy_rows",
            (rows, 1),
            &[s(input), i(rows), i(dim), s("a"), s("rl")],
        )
        .run(
            "nce_cauchy_grad",
            (rows, 1),
            &[
                s(input),
                s("a"),
                s("rl"),
                i(rows),
                i(dim),
                s("g"),
                s("loss"),
            ],
        );
    let grad = match map_scale {
        Some(scale) => {
            sc.zeros("dz", rows * dim).run(
                "fixed_scale_bwd",
                (1, 1),
                &[s("z"), s("g"), i(rows), i(dim), d(scale), s("st"), s("dz")],
            );
            "dz"
        }
        None => "g",
    };
    let got = sc.get("loss", 1).get(grad, rows * dim).exec(exe);
    (got[0][0], got[1].clone())
}

/// The CPU's loss on host rows (tsimcne-train's `CauchyOnHost`).
fn loss_on_cpu(z: &[f32], rows: usize, dim: usize, map_scale: Option<f64>) -> (f32, Vec<f32>) {
    use tsimcne_ops::{fixed_scale_backward, fixed_scale_forward, info_nce_cauchy};
    match map_scale {
        None => info_nce_cauchy(z, rows, dim),
        Some(scale) => {
            let (y, fs) = fixed_scale_forward(z, rows, dim, scale);
            let (loss, dy) = info_nce_cauchy(&y, rows, dim);
            (loss, fixed_scale_backward(&fs, &dy, rows, dim))
        }
    }
}

/// The loss kernels give the CPU's loss and gradient within rounding (the
/// kernels form squared distances as sums of squared differences, the CPU
/// as ‖u‖² + ‖v‖² − 2u·v): 2-D maps with and without the demo's map scale,
/// more views than a block's threads (several tiles), more coordinates
/// than a block's threads (several column chunks), and two identical views.
#[test]
fn the_loss_kernels_match_the_cpu_loss_and_gradient() {
    let Some(exe) = runner() else { return };
    let cases: [(usize, usize, Option<f64>); 6] = [
        (8, 2, None),
        (8, 2, Some(11.0)),
        (64, 3, None),
        (300, 2, Some(11.0)),
        (260, 2, None),
        (12, 300, None),
    ];
    for (rows, dim, map_scale) in cases {
        let mut z: Vec<f32> = values(rows * dim, (rows * 7 + dim) as u64)
            .iter()
            .map(|v| v * 0.7)
            .collect();
        // Views 1 and 3 identical: distance 0, no gradient through it.
        let (one, three) = (z[dim..2 * dim].to_vec(), 3 * dim);
        z[three..three + dim].copy_from_slice(&one);
        let (gl, gg) = loss_on_kernels(exe, &z, rows, dim, map_scale);
        let (cl, cg) = loss_on_cpu(&z, rows, dim, map_scale);
        let what = format!("{rows} views of {dim} coordinates, map scale {map_scale:?}");
        assert!(
            (gl - cl).abs() <= 1e-5 * cl.abs().max(1.0),
            "{what}: loss {gl} on the kernels, {cl} on the CPU"
        );
        assert_close(&format!("{what}: gradient"), &gg, &cg, 1e-4);
    }
}

/// `bn_stats_finish_running` (the split path's finishing launch, running
/// statistics updated in place) gives the bits of `bn_stats_finish` and
/// then `bn_running`, and the running statistics are the CPU path's
/// `running · (1 − m) + batch · w` (fast.rs), bit for bit.
#[test]
fn the_fused_finish_gives_the_finish_and_running_kernels_bits() {
    let Some(exe) = runner() else { return };
    let (keep, wm, wv) = (0.9f32, 0.1f32, 0.1 * 37.0 / 36.0);
    for (n, c, hw) in SHAPES {
        let shape = (n, c, hw);
        let len = n * c * hw;
        let (x, _, gamma, beta) = forward_inputs(len, c, Storage::F32);
        let (rm, rv) = (
            values(c, 5),
            values(c, 6).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        );
        let parts = BnSums::Split.parts(n * hw);
        let form = Form::f32(Ix::Fast);
        let (part_kernel, part_grid, part_args) = form.part_launch("bn_stats_part", shape, parts);
        let finish_args = |rest: &[&str]| -> Vec<String> {
            let mut a = vec![
                s("part"),
                i(parts),
                i(n),
                i(c),
                i(hw),
                s("gamma"),
                s("beta"),
                d(EPS),
            ];
            a.extend(rest.iter().map(|r| s(r)));
            a
        };
        let f = |v: f32| format!("f:{v:e}");
        let mut sc = Script::default();
        sc.f32("x", &x)
            .f32("gamma", &gamma)
            .f32("beta", &beta)
            .f32("rm", &rm)
            .f32("rv", &rv)
            .f64("part", 2 * c * parts);
        for b in ["mean", "var", "scale", "shift", "nm", "nv"] {
            sc.zeros(b, c);
        }
        let grid = (c.div_ceil(THREADS), 1);
        sc.run(
            &part_kernel,
            part_grid,
            &[vec![s("x")], part_args, vec![s("part")]].concat(),
        )
        .run(
            "bn_stats_finish",
            grid,
            &finish_args(&["mean", "var", "scale", "shift"]),
        )
        .run(
            "bn_running",
            grid,
            &[
                s("rm"),
                s("rv"),
                s("mean"),
                s("var"),
                f(keep),
                f(wm),
                f(wv),
                i(c),
                s("nm"),
                s("nv"),
            ],
        );
        for b in ["mean", "var", "scale", "shift", "nm", "nv"] {
            sc.get(b, c);
        }
        // The fused kernel on fresh buffers, the running statistics in place.
        for b in ["mean", "var", "scale", "shift"] {
            sc.zeros(b, c);
        }
        let mut fused = finish_args(&[]);
        fused.extend([f(keep), f(wm), f(wv), s("rm"), s("rv")]);
        fused.extend(["mean", "var", "scale", "shift"].map(s));
        sc.run("bn_stats_finish_running", grid, &fused);
        for b in ["mean", "var", "scale", "shift", "rm", "rv"] {
            sc.get(b, c);
        }
        let got = sc.exec(exe);
        let what = format!("n {n} c {c} hw {hw} parts {parts}");
        assert_eq!(bits(&got[..6]), bits(&got[6..]), "{what}");
        let cpu = |r: &[f32], b: &[f32], w: f32| -> Vec<f32> {
            r.iter().zip(b).map(|(r, b)| r * keep + b * w).collect()
        };
        assert_eq!(
            bits(&[cpu(&rm, &got[0], wm)]),
            bits(&got[4..5]),
            "{what}: running mean"
        );
        assert_eq!(
            bits(&[cpu(&rv, &got[1], wv)]),
            bits(&got[5..6]),
            "{what}: running var"
        );
    }
}
