//! Training-step benchmark, the Rust half of `make bench-train` (the other
//! half is `bench/train_torch.py`; `bench/train.sh` runs both and prints the
//! ratios). One configuration per process, so the peak RSS is its own.
//!
//! ```text
//! bench_train step  PRESET VIEWS [KERNELS]   full step: forward + backward + SGD
//! bench_train fwd   PRESET VIEWS [KERNELS]   forward only (training mode)
//! bench_train profile PRESET VIEWS [KERNELS] the step's GPU backbone phase by
//!     phase (a GPU and fast kernels only): each convolution and batch norm,
//!     with its shape and cuDNN algorithm, the SGD step and the rest
//! bench_train ops   [fast|candle]                per-op timings at 128 images
//! bench_train frozen PRESET VIEWS SIDE CHANNELS LAYERS   a 2-D fine-tuning step
//!     with the stem and the first LAYERS stages frozen (their output given),
//!     split into its parts: the backbone's rest with the head and loss, and SGD
//! ```
//!
//! `step`, `fwd` and `profile` take `--image SIDExCHANNELS` (default
//! `32x3`, CIFAR's; the demo's is `14x1`). On a GPU, `step` also prints
//! `enqueue_PRESET_VIEWS`: the median time until the step's work is queued
//! (`loss_and_grads` and the SGD step return, the loss read between them
//! not counted): near the step's own time, the step is bound by the CPU's
//! launches, not by the GPU.
//!
//! Any mode takes `--device cpu|cuda|cuda:N` (default cpu; CUDA in a build
//! with the `cuda` feature, see `bench/gpu.sh`); on a GPU the default kernels
//! are candle's, `fast` is our GPU backbone (cuDNN convolutions in exact
//! f32), and `KERNELS` is `candle` or `fast` with any of the suffixes, in
//! this order: `-tf32` TF32 convolutions or `-bf16` bf16 activations and
//! convolutions (`ConvMath::Bf16`), `-nhwc` channels-last activations
//! (`MemoryFormat::Nhwc`, whose batch norm is always split into parts,
//! whatever `-split` says), `-split` batch-norm sums over many
//! blocks a channel (`BnSums::Split`), `-sgd` the SGD step in one kernel
//! launch (`GpuStep::Fused`), `-loss` the loss and its gradient in our
//! kernels (`GpuLoss::Kernels`), `-timed` each convolution's algorithms
//! chosen by timing them (`ConvSearch::Timed`, as `cudnn.benchmark`),
//! `-release` the GPU memory a step frees handed back to the driver at each
//! synchronisation (the driver's default; `DeviceSpec::open` keeps it,
//! `cuda::FreedMemory`), `-events` cudarc's two CUDA events made with every
//! allocation (its default; `DeviceSpec::open` turns them off,
//! `cuda::AllocationEvents`); e.g.
//! `fast-tf32-split-sgd`. Every timed
//! repetition ends with a device synchronisation.
//!
//! Prints `key seconds` lines (the median over the timed repetitions) and
//! `peak_rss_mib N`. Threads: `RAYON_NUM_THREADS` (set it to 2 to compare
//! with PyTorch's `torch.set_num_threads(2)`).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use tsimcne_model::{
    Backprop, BnSums, ConvMath, ConvSearch, DeviceSpec, GpuLoss, Kernels, MemoryFormat, Model,
    Objective,
};
use tsimcne_ops::{BnStats, ConvGeom};
use tsimcne_train::{Contrastive, GpuStep, Sgd, SgdConfig, Similarity};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` `reps` times after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = tsimcne_rng::SplitMix64::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// `candle`, or `fast` with suffixes; none: the device's default (fast on
/// the CPU).
fn kernels(arg: Option<&String>, dev: &Device) -> Kernels {
    match arg.map(String::as_str) {
        Some("candle") => Kernels::Candle,
        Some(a) if a.starts_with("fast") => Kernels::Fast,
        _ => Kernels::default_for(dev),
    }
}

/// The GPU settings that `fast`'s suffixes name.
#[derive(Clone, Copy)]
struct GpuSettings {
    math: ConvMath,
    format: MemoryFormat,
    sums: BnSums,
    sgd: GpuStep,
    loss: GpuLoss,
    search: ConvSearch,
    /// `-release`: `cuda::FreedMemory::Release` instead of `Keep`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    release: bool,
    /// `-events`: `cuda::AllocationEvents::Made` instead of `None`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    events: bool,
}

fn gpu_settings(arg: Option<&String>) -> GpuSettings {
    let a = arg.map_or("", String::as_str);
    let mut rest = a.strip_prefix("fast").unwrap_or("");
    let mut take = |suffix: &str| match rest.strip_prefix(suffix) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    let s = GpuSettings {
        math: if take("-tf32") {
            ConvMath::Tf32
        } else if take("-bf16") {
            ConvMath::Bf16
        } else {
            ConvMath::Exact
        },
        format: if take("-nhwc") {
            MemoryFormat::Nhwc
        } else {
            MemoryFormat::Nchw
        },
        sums: if take("-split") {
            BnSums::Split
        } else {
            BnSums::PerChannel
        },
        sgd: if take("-sgd") {
            GpuStep::Fused
        } else {
            GpuStep::TensorOps
        },
        loss: if take("-loss") {
            GpuLoss::Kernels
        } else {
            GpuLoss::Graph
        },
        search: if take("-timed") {
            ConvSearch::Timed
        } else {
            ConvSearch::Heuristic
        },
        release: take("-release"),
        events: take("-events"),
    };
    if !rest.is_empty() {
        eprintln!(
            "unknown kernels {a}: candle, or fast[-tf32|-bf16][-nhwc][-split][-sgd][-loss][-timed][-release][-events]"
        );
        std::process::exit(2);
    }
    s
}

fn sync(dev: &Device) {
    dev.synchronize().expect("device synchronisation");
}

/// The input images of `step`, `fwd` and `profile`: square, `side`
/// pixels, `channels` channels.
#[derive(Clone, Copy)]
struct Image {
    side: usize,
    channels: usize,
}

impl Image {
    const CIFAR: Image = Image {
        side: 32,
        channels: 3,
    };

    /// `SIDExCHANNELS`, e.g. `14x1`.
    fn parse(s: &str) -> Option<Image> {
        let (side, channels) = s.split_once('x')?;
        let (side, channels) = (side.parse().ok()?, channels.parse().ok()?);
        (side > 0 && channels > 0).then_some(Image { side, channels })
    }
}

fn model_run(
    what: &str,
    preset: &str,
    (views, image): (usize, Image),
    (k, gpu): (Kernels, GpuSettings),
    dev: &Device,
) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    if gpu.release {
        tsimcne_model::cuda::set_freed_memory(dev, tsimcne_model::cuda::FreedMemory::Release)
            .map_err(candle_core::Error::wrap)?;
    }
    #[cfg(feature = "cuda")]
    if gpu.events {
        tsimcne_model::cuda::set_allocation_events(
            dev,
            tsimcne_model::cuda::AllocationEvents::Made,
        )
        .map_err(candle_core::Error::wrap)?;
    }
    let arch =
        tsimcne_model::preset(preset, image.channels, 128).map_err(candle_core::Error::wrap)?;
    let mut model = Model::new(&arch, 0, dev).map_err(candle_core::Error::wrap)?;
    model.set_kernels(k).map_err(candle_core::Error::wrap)?;
    model.set_conv_math(gpu.math);
    model.set_bn_sums(gpu.sums);
    model.set_memory_format(gpu.format);
    model.set_conv_search(gpu.search);
    model.set_gpu_loss(gpu.loss);
    let Image { side, channels } = image;
    let x = Tensor::from_vec(
        random(views * channels * side * side, 1),
        (views, channels, side, side),
        dev,
    )?;
    let mut sgd = Sgd::new(model.trainable(None), SgdConfig::default());
    sgd.set_gpu_step(gpu.sgd);
    let reps = if preset == "resnet18" { 3 } else { 7 };
    // As in the trainer: the loss comes back to the host every step (the
    // NaN check), which also waits for the forward and backward passes.
    // "fwd": the training-mode forward with the output layer's gradient
    // only: the backbone's forward pass and BatchNorm updates, no backbone
    // backward and no SGD step.
    if what == "profile" {
        return profile(&mut model, &x, &mut sgd, dev, reps);
    }
    let backprop = match what {
        "step" => Backprop::Full,
        "fwd" => Backprop::OutputOnly,
        other => panic!("unknown mode {other}"),
    };
    let objective = Contrastive::new(Similarity::Cauchy, None);
    // The seconds until each repetition's work was queued.
    let mut queued = Vec::new();
    let secs = time(reps, || {
        let t = Instant::now();
        let (loss, grads) = model.loss_and_grads(&x, backprop, &objective).expect(what);
        let mut q = t.elapsed().as_secs_f64();
        loss.to_scalar::<f32>().expect("loss");
        if backprop == Backprop::Full {
            let t = Instant::now();
            sgd.step(&grads, 0.01).expect("sgd");
            q += t.elapsed().as_secs_f64();
        }
        sync(dev);
        queued.push(q);
    });
    println!("{what}_{preset}_{views} {secs:.4}");
    if what == "step" && !dev.is_cpu() {
        queued.remove(0); // the warm-up
        println!("enqueue_{preset}_{views} {:.4}", median(queued));
    }
    Ok(())
}

/// The training step of [`model_run`] with the GPU backbone's phases timed
/// one by one (`Model::start_gpu_profile`): per step, the milliseconds and
/// calls of each phase (convolution or batch norm, direction, shape, cuDNN
/// algorithm), slowest first, then the whole step, the SGD step, and the
/// rest (the head, the loss, candle's ops). Each timed phase runs between
/// two synchronisations, so the sum is a little above `step`'s time.
/// One training step with a synchronisation after the gradients and after
/// SGD: their seconds.
#[cfg(feature = "cuda")]
fn timed_step(
    model: &mut Model,
    x: &Tensor,
    sgd: &mut Sgd,
    dev: &Device,
) -> candle_core::Result<(f64, f64)> {
    let objective = Contrastive::new(Similarity::Cauchy, None);
    sync(dev);
    let t = Instant::now();
    let (loss, grads) = model
        .loss_and_grads(x, Backprop::Full, &objective)
        .map_err(candle_core::Error::wrap)?;
    loss.to_scalar::<f32>()?;
    sync(dev);
    let grad_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sgd.step(&grads, 0.01).map_err(candle_core::Error::wrap)?;
    sync(dev);
    Ok((grad_secs, t.elapsed().as_secs_f64()))
}

#[cfg(feature = "cuda")]
fn profile(
    model: &mut Model,
    x: &Tensor,
    sgd: &mut Sgd,
    dev: &Device,
    reps: usize,
) -> candle_core::Result<()> {
    let step = |model: &mut Model, sgd: &mut Sgd| timed_step(model, x, sgd, dev);
    step(model, sgd)?; // the plans and kernels, not timed
    model
        .start_gpu_profile()
        .map_err(candle_core::Error::wrap)?;
    let (mut grad_secs, mut sgd_secs) = (0.0, 0.0);
    for _ in 0..reps {
        let (g, s) = step(model, sgd)?;
        grad_secs += g;
        sgd_secs += s;
    }
    let Some(p) = model.take_gpu_profile().filter(|p| !p.phases.is_empty()) else {
        eprintln!("profile: the model did not run on our GPU backbone (use fast kernels on a GPU)");
        std::process::exit(2);
    };
    let per = |secs: f64| secs / reps as f64 * 1e3;
    let mut phases = p.phases;
    phases.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let backbone: f64 = phases.iter().map(|p| p.seconds).sum();
    for ph in &phases {
        println!(
            "phase_ms {:8.3} calls {:3} {}",
            per(ph.seconds),
            ph.calls / reps as u64,
            ph.label
        );
    }
    let groups = [
        "conv forward",
        "conv backward-data",
        "conv backward-filter",
        "batch norm forward",
        "batch norm backward",
        "convert",
        "pool",
    ];
    for g in groups {
        let secs: f64 = phases
            .iter()
            .filter(|p| p.label.starts_with(g))
            .map(|p| p.seconds)
            .sum();
        println!("group_ms {:8.3} {g}", per(secs));
    }
    println!(
        "step_ms {:8.3} (forward, loss, backward: {:.3}; SGD: {:.3})",
        per(grad_secs + sgd_secs),
        per(grad_secs),
        per(sgd_secs)
    );
    println!(
        "rest_ms {:8.3} (head, loss, candle's ops, launches between phases)",
        per(grad_secs - backbone)
    );
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn profile(
    _: &mut Model,
    _: &Tensor,
    _: &mut Sgd,
    _: &Device,
    _: usize,
) -> candle_core::Result<()> {
    eprintln!(
        "profile times the GPU backbone: build with the cuda feature (scripts/build-cuda.sh)"
    );
    std::process::exit(2);
}

/// Our kernels on one convolution shape: seconds for the forward, the input
/// gradient, the weight gradient, and BN (+ReLU) forward+backward on its output.
fn fast_times(g: &ConvGeom) -> [f64; 4] {
    let x = random(g.input_len(), 1);
    let pm = tsimcne_ops::weight_to_patch_major(&random(g.weight_len(), 2), g);
    let dy = random(g.output_len(), 3);
    let mut out = vec![0.0; g.output_len()];
    let f = time(5, || tsimcne_ops::conv_forward(&x, g, &pm, &mut out));
    let mut dx = vec![0.0; g.input_len()];
    let d = time(5, || {
        tsimcne_ops::conv_backward_data(&dy, g, &pm, &mut dx, false)
    });
    let w = time(5, || {
        std::hint::black_box(tsimcne_ops::conv_backward_weight(&x, &dy, g));
    });
    let c = g.cout;
    let (gamma, beta) = (vec![1.0f32; c], vec![0.0f32; c]);
    let mut y = vec![0.0; g.output_len()];
    let mut dxb = vec![0.0; g.output_len()];
    let bn = time(5, || {
        let s: BnStats =
            tsimcne_ops::bn_train_forward(&out, c, &gamma, &beta, 1e-5, None, true, &mut y);
        tsimcne_ops::bn_train_backward(&out, Some(&y), &dy, c, &gamma, &s, 1e-5, &mut dxb, None);
    });
    [f, d, w, bn]
}

/// Conv forward, input gradient, weight gradient and BN forward+backward at
/// 128 images of 64 ch × 32×32 and 128 ch × 16×16 (3×3, stride 1, pad 1).
fn ops(k: Kernels, dev: &Device) -> candle_core::Result<()> {
    for (c, hw) in [(64usize, 32usize), (128, 16)] {
        let g = ConvGeom {
            n: 128,
            h: hw,
            w: hw,
            cin: c,
            cout: c,
            k: 3,
            stride: 1,
            pad: 1,
        };
        let tag = format!("{c}x{hw}");
        let x = random(g.input_len(), 1);
        let w = random(g.weight_len(), 2);
        let dy = random(g.output_len(), 3);
        match k {
            Kernels::Fast => {
                let [f, d, dw, bn] = fast_times(&g);
                println!("conv_fwd_{tag} {f:.4}");
                println!("conv_dx_{tag} {d:.4}");
                println!("conv_dw_{tag} {dw:.4}");
                println!("bn_fwd_bwd_{tag} {bn:.4}");
            }
            Kernels::Candle => {
                let xt = Var::from_vec(x.clone(), (128, c, hw, hw), dev)?;
                let wt = Var::from_vec(w.clone(), (c, c, 3, 3), dev)?;
                let dyt = Tensor::from_vec(dy.clone(), (128, c, hw, hw), dev)?;
                let t = time(5, || {
                    xt.as_tensor()
                        .conv2d(wt.as_tensor(), 1, 1, 1, 1)
                        .expect("conv");
                    sync(dev);
                });
                println!("conv_fwd_{tag} {t:.4}");
                // candle's backward of conv2d: both gradients at once.
                let t = time(3, || {
                    let y = xt
                        .as_tensor()
                        .conv2d(wt.as_tensor(), 1, 1, 1, 1)
                        .expect("conv");
                    (y * &dyt)
                        .expect("mul")
                        .sum_all()
                        .expect("sum")
                        .backward()
                        .expect("bwd");
                    sync(dev);
                });
                println!("conv_fwd_dx_dw_{tag} {t:.4}");
                let bn = candle_nn::batch_norm(
                    c,
                    candle_nn::BatchNormConfig::default(),
                    candle_nn::VarBuilder::from_varmap(
                        &candle_nn::VarMap::new(),
                        candle_core::DType::F32,
                        dev,
                    ),
                )?;
                let t = time(5, || {
                    let y = candle_core::ModuleT::forward_t(&bn, xt.as_tensor(), true)
                        .expect("bn")
                        .relu()
                        .expect("relu");
                    (y * &dyt)
                        .expect("mul")
                        .sum_all()
                        .expect("sum")
                        .backward()
                        .expect("bwd");
                    sync(dev);
                });
                println!("bn_fwd_bwd_{tag} {t:.4}");
            }
        }
    }
    Ok(())
}

/// Per-layer conv timings of a preset's backbone (fast kernels): forward,
/// input gradient and weight gradient of every distinct convolution shape.
fn layers(preset: &str, views: usize, side: usize, channels: usize) -> candle_core::Result<()> {
    let arch = tsimcne_model::preset(preset, channels, 128).map_err(candle_core::Error::wrap)?;
    let mut shapes = vec![(channels, arch.widths[0], 3, 1, side)];
    let mut hw = side;
    for b in arch.residual_blocks() {
        let (cin, w, stride) = (b.cin, b.cout, b.stride);
        shapes.push((cin, w, 3, stride, hw));
        if b.has_shortcut() {
            shapes.push((cin, w, 1, stride, hw));
        }
        hw = (hw + 2 - 3) / stride + 1;
        shapes.push((w, w, 3, 1, hw));
    }
    shapes.dedup();
    let mut total = [0.0; 4];
    for (cin, cout, k, stride, hw) in shapes {
        let g = ConvGeom {
            n: views,
            h: hw,
            w: hw,
            cin,
            cout,
            k,
            stride,
            pad: k / 2,
        };
        let [f, d, w, bn] = fast_times(&g);
        let gflop = 2.0 * (g.out_rows() * g.patch() * cout) as f64 / 1e9;
        println!(
            "layer {cin}->{cout} k{k} s{stride} @{hw}: fwd {f:.4} dx {d:.4} dw {w:.4} bn {bn:.4}  ({:.0}/{:.0}/{:.0} GFLOP/s)",
            gflop / f,
            gflop / d,
            gflop / w
        );
        for (t, v) in total.iter_mut().zip([f, d, w, bn]) {
            *t += v;
        }
    }
    println!(
        "layers_total fwd {:.4} dx {:.4} dw {:.4} bn {:.4}",
        total[0], total[1], total[2], total[3]
    );
    Ok(())
}

/// A fine-tuning step of a 2-D model whose stem and first `layers`
/// stages are frozen (`finetune --freeze-layers`), as the trainer runs it with the
/// demo's views: the frozen part's output is given (computed once here), so
/// the step is the rest of the backbone, the head, the loss and SGD.
fn frozen(
    preset: &str,
    views: usize,
    side: usize,
    channels: usize,
    layers: usize,
) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let arch = tsimcne_model::preset(preset, channels, 2).map_err(candle_core::Error::wrap)?;
    let blocks = arch.blocks_in(layers);
    let mut model = Model::new(&arch, 0, &dev).map_err(candle_core::Error::wrap)?;
    let x = Tensor::from_vec(
        random(views * channels * side * side, 1),
        (views, channels, side, side),
        &dev,
    )?;
    let acts = model
        .frozen_prefix(&x, blocks)
        .map_err(candle_core::Error::wrap)?;
    let frozen = arch.frozen_prefixes(layers);
    let mut sgd = Sgd::new(
        model
            .trainable(None)
            .into_iter()
            .filter(|(name, _)| !frozen.iter().any(|p| name.starts_with(p.as_str())))
            .collect(),
        SgdConfig::default(),
    );
    let reps = 15;
    // The demo's objective: the Cauchy loss at a fixed spread.
    let objective = Contrastive::new(Similarity::Cauchy, Some(11.0));
    let step_s = time(reps, || {
        let (l, _) = model
            .loss_and_grads_from(acts.clone(), blocks, &objective)
            .expect("step");
        l.to_scalar::<f32>().expect("loss");
    });
    let (_, grads) = model
        .loss_and_grads_from(acts.clone(), blocks, &objective)
        .expect("step");
    let sgd_s = time(reps, || sgd.step(&grads, 0.01).expect("sgd"));
    // The head and the loss alone, from the backbone's output: on host rows
    // (what the step above runs) and as a candle graph (what it ran before).
    let width = arch.feature_dim();
    let feat = Tensor::from_vec(random(views * width, 2), (views, width), &dev)?;
    let graph = |z: &Tensor| objective.loss(z);
    let graph_s = time(reps, || {
        let f = Var::from_tensor(&feat).expect("var");
        let l = graph(&model.head_forward(f.as_tensor()).expect("head")).expect("loss");
        let g = l.backward().expect("backward");
        assert!(g.get(f.as_tensor()).is_some());
    });
    let host_s = time(reps, || {
        let (l, g) = model
            .head_loss_and_grads(&feat, &objective)
            .expect("host head");
        assert!(l.is_finite() && !g.is_empty());
    });
    println!(
        "frozen_{preset}_{views}_{layers} {step_s:.4} (head and loss: host {host_s:.4}, graph {graph_s:.4}; then sgd {sgd_s:.4})"
    );
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut spec = DeviceSpec::Cpu;
    if let Some(i) = args.iter().position(|a| a == "--device") {
        let Some(name) = args.get(i + 1) else {
            eprintln!("--device needs a value: cpu, cuda or cuda:N");
            std::process::exit(2);
        };
        spec = name.parse().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
        args.drain(i..i + 2);
    }
    let dev = spec.open().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    let mut image = Image::CIFAR;
    if let Some(i) = args.iter().position(|a| a == "--image") {
        image = args
            .get(i + 1)
            .and_then(|v| Image::parse(v))
            .unwrap_or_else(|| {
                eprintln!("--image needs SIDExCHANNELS, e.g. 32x3 or 14x1");
                std::process::exit(2);
            });
        args.drain(i..i + 2);
    }
    match args.first().map(String::as_str) {
        Some(m @ ("step" | "fwd" | "profile")) => {
            let preset = args.get(1).map_or("small", String::as_str);
            let views = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(128);
            let k = (kernels(args.get(3), &dev), gpu_settings(args.get(3)));
            model_run(m, preset, (views, image), k, &dev)?;
        }
        Some("ops") => {
            let k = kernels(args.get(1), &dev);
            if k == Kernels::Fast && !dev.is_cpu() {
                eprintln!("ops times the CPU's fast kernels; on a GPU use step or fwd");
                std::process::exit(2);
            }
            ops(k, &dev)?
        }
        Some("frozen") => frozen(
            args.get(1).map_or("small", String::as_str),
            args.get(2).and_then(|v| v.parse().ok()).unwrap_or(512),
            args.get(3).and_then(|v| v.parse().ok()).unwrap_or(14),
            args.get(4).and_then(|v| v.parse().ok()).unwrap_or(1),
            args.get(5).and_then(|v| v.parse().ok()).unwrap_or(2),
        )?,
        Some("layers") if !dev.is_cpu() => {
            eprintln!("layers times the fast kernels, which run on the CPU only");
            std::process::exit(2);
        }
        Some("layers") => layers(
            args.get(1).map_or("small", String::as_str),
            args.get(2).and_then(|v| v.parse().ok()).unwrap_or(128),
            args.get(3).and_then(|v| v.parse().ok()).unwrap_or(32),
            args.get(4).and_then(|v| v.parse().ok()).unwrap_or(3),
        )?,
        _ => {
            eprintln!(
                "usage: bench_train step|fwd|profile PRESET VIEWS [candle|fast[-tf32|-bf16][-nhwc][-split][-sgd][-loss][-timed][-release][-events]] [--image SIDExCHANNELS] \
                 | ops [fast|candle] | layers PRESET VIEWS  [--device cpu|cuda|cuda:N]"
            );
            std::process::exit(2);
        }
    }
    println!("peak_rss_mib {:.0}", peak_rss_mib());
    Ok(())
}
