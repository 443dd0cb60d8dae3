//! The CPU against a CUDA GPU (built only with `--features cuda`; runs
//! with `TSIMCNE_TEST_CUDA=1` on a machine with an NVIDIA GPU, and is
//! skipped with a note otherwise). From the same weights and batch, two
//! training steps of the tiny preset give the same loss, gradients, weights,
//! momentum buffers, BatchNorm statistics and eval outputs within float
//! rounding: on the CPU our fast kernels and the fused SGD loop, on the GPU
//! each GPU backbone (candle's kernels; ours, exact and TF32) and SGD's
//! tensor path. Ours on the GPU also repeats itself bit for bit, the
//! fused SGD kernel gives the tensor path's bits, and the loss kernels
//! (`GpuLoss::Kernels`) give the graph's loss and gradients.

mod common;

use candle_core::{Device, Tensor, Var};
use common::values;
use tsimcne_model::{
    Backprop, BnSums, ConvMath, DeviceSpec, GpuLoss, Kernels, MemoryFormat, Model, Objective,
    preset,
};
use tsimcne_train::{Contrastive, GpuStep, Sgd, SgdConfig, Similarity};

/// The first CUDA device, or `None` (with a note) unless asked for.
fn cuda() -> Option<Device> {
    if std::env::var_os("TSIMCNE_TEST_CUDA").is_none() {
        eprintln!("note: CPU/CUDA comparison skipped; set TSIMCNE_TEST_CUDA=1 on a GPU machine");
        return None;
    }
    Some(
        DeviceSpec::Cuda(0)
            .open()
            .expect("TSIMCNE_TEST_CUDA=1, but no CUDA device"),
    )
}

/// Asserts max |a − b| ≤ tol · max(1, max |b|): `a` from the GPU, `b` the CPU.
fn close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    close_scaled(what, a, b, tol, 1.0);
}

/// Asserts max |a − b| ≤ tol · max |b| (no floor at 1: for gradients far
/// below 1).
fn close_rel(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    close_scaled(what, a, b, tol, 1e-30);
}

/// Asserts max |a − b| ≤ tol · max(floor, max |b|).
fn close_scaled(what: &str, a: &Tensor, b: &Tensor, tol: f64, floor: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= tol * scale,
        "{what}: CUDA and CPU differ by up to {diff:e} (scale {scale:e}, tolerance {tol:e})"
    );
}

fn batch(n: usize, c: usize, s: usize) -> Vec<f32> {
    let mut rng = tsimcne_rng::SplitMix64::keyed(&[11]);
    (0..n * c * s * s)
        .map(|_| rng.uniform(0.0, 1.0) as f32)
        .collect()
}

#[test]
fn candle_kernels_on_cuda_agree_with_the_cpu() {
    let Some(gpu) = cuda() else { return };
    steps_agree(
        &gpu,
        (Kernels::Candle, ConvMath::Exact, BnSums::PerChannel, NCHW),
        1.0,
    );
}

#[test]
fn our_kernels_on_cuda_agree_with_the_cpu() {
    let Some(gpu) = cuda() else { return };
    steps_agree(
        &gpu,
        (Kernels::Fast, ConvMath::Exact, BnSums::PerChannel, NCHW),
        1.0,
    );
}

#[test]
fn our_kernels_with_split_sums_on_cuda_agree_with_the_cpu() {
    let Some(gpu) = cuda() else { return };
    steps_agree(
        &gpu,
        (Kernels::Fast, ConvMath::Exact, BnSums::Split, NCHW),
        1.0,
    );
}

#[test]
fn our_channels_last_kernels_on_cuda_agree_with_the_cpu() {
    let Some(gpu) = cuda() else { return };
    steps_agree(
        &gpu,
        (Kernels::Fast, ConvMath::Exact, BnSums::Split, NHWC),
        1.0,
    );
}

#[test]
fn our_tf32_kernels_on_cuda_agree_with_the_cpu_within_tf32_rounding() {
    let Some(gpu) = cuda() else { return };
    // TF32 rounds the products' inputs to 10 mantissa bits (about 5e-4);
    // two steps of the tiny net differed by up to 5.03e-3 (H200).
    steps_agree(
        &gpu,
        (Kernels::Fast, ConvMath::Tf32, BnSums::PerChannel, NCHW),
        100.0,
    );
}

#[test]
fn our_kernels_on_cuda_repeat_bit_for_bit() {
    let Some(gpu) = cuda() else { return };
    repeat_bit_for_bit(&gpu, (BnSums::PerChannel, NCHW));
}

#[test]
fn our_kernels_with_split_sums_on_cuda_repeat_bit_for_bit() {
    let Some(gpu) = cuda() else { return };
    repeat_bit_for_bit(&gpu, (BnSums::Split, NCHW));
}

#[test]
fn our_channels_last_kernels_on_cuda_repeat_bit_for_bit() {
    let Some(gpu) = cuda() else { return };
    repeat_bit_for_bit(&gpu, (BnSums::Split, NHWC));
}

const NCHW: MemoryFormat = MemoryFormat::Nchw;
const NHWC: MemoryFormat = MemoryFormat::Nhwc;

fn repeat_bit_for_bit(gpu: &Device, form: (BnSums, MemoryFormat)) {
    let run = || train_bits(gpu, form, GpuStep::TensorOps, SgdConfig::default()).0;
    assert!(
        run() == run(),
        "two runs of the GPU backbone ({form:?}) differ"
    );
}

#[test]
fn the_fused_sgd_step_on_cuda_gives_the_tensor_ops_bits() {
    let Some(gpu) = cuda() else { return };
    let plain = SgdConfig {
        momentum: 0.0,
        weight_decay: 0.0,
        clip_value: None,
    };
    for config in [SgdConfig::default(), plain] {
        let form = (BnSums::PerChannel, NCHW);
        let ops = train_bits(&gpu, form, GpuStep::TensorOps, config);
        let fused = train_bits(&gpu, form, GpuStep::Fused, config);
        assert!(ops.0 == fused.0, "{config:?}: weights differ");
        assert_eq!(ops.1, fused.1, "{config:?}: momentum buffers differ");
    }
}

/// Three steps of the tiny preset on the GPU with our kernels: the saved
/// model's bytes and the momentum buffers' bits.
fn train_bits(
    gpu: &Device,
    (sums, format): (BnSums, MemoryFormat),
    step: GpuStep,
    config: SgdConfig,
) -> (Vec<u8>, Vec<(String, Vec<u32>)>) {
    let arch = preset("tiny", 3, 8).unwrap();
    let dims = (32, 3, 16, 16);
    let mut m = Model::new(&arch, 5, gpu).unwrap();
    m.set_kernels(Kernels::Fast).unwrap();
    m.set_bn_sums(sums);
    m.set_memory_format(format);
    let x = Tensor::from_vec(batch(32, 3, 16), dims, gpu).unwrap();
    let mut sgd = Sgd::new(m.trainable(None), config);
    sgd.set_gpu_step(step);
    for _ in 0..3 {
        let (_, g) = m
            .loss_and_grads(
                &x,
                Backprop::Full,
                &Contrastive::new(Similarity::Cauchy, None),
            )
            .unwrap();
        sgd.step(&g, 0.05).unwrap();
    }
    let buffers = sgd
        .buffers()
        .iter()
        .map(|(name, b)| {
            let v = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name.clone(), v.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    (m.to_safetensors().unwrap(), buffers)
}

/// Two training steps on the CPU (our kernels) and on the GPU with
/// `kernels`, `math`, `sums` and `format`, compared at the tolerances below times
/// `slack`.
fn steps_agree(
    gpu: &Device,
    (kernels, math, sums, format): (Kernels, ConvMath, BnSums, MemoryFormat),
    slack: f64,
) {
    let arch = preset("tiny", 3, 8).unwrap();
    let dims = (32, 3, 16, 16); // 16 images, two views each
    let pixels = batch(32, 3, 16);
    let mut cpu_model = Model::new(&arch, 5, &Device::Cpu).unwrap();
    let mut gpu_model = Model::new(&arch, 5, gpu).unwrap();
    assert_eq!(cpu_model.kernels(), Kernels::Fast);
    assert_eq!(gpu_model.kernels(), Kernels::default_for(gpu));
    gpu_model.set_kernels(kernels).unwrap();
    gpu_model.set_conv_math(math);
    gpu_model.set_bn_sums(sums);
    gpu_model.set_memory_format(format);
    let close = |what: &str, a: &Tensor, b: &Tensor, tol: f64| close(what, a, b, tol * slack);
    let x_cpu = Tensor::from_vec(pixels.clone(), dims, &Device::Cpu).unwrap();
    let x_gpu = Tensor::from_vec(pixels, dims, gpu).unwrap();
    let mut cpu_sgd = Sgd::new(cpu_model.trainable(None), SgdConfig::default());
    let mut gpu_sgd = Sgd::new(gpu_model.trainable(None), SgdConfig::default());
    for step in 0..2 {
        let loss = Contrastive::new(Similarity::Cauchy, None);
        let (l_cpu, g_cpu) = cpu_model
            .loss_and_grads(&x_cpu, Backprop::Full, &loss)
            .unwrap();
        let (l_gpu, g_gpu) = gpu_model
            .loss_and_grads(&x_gpu, Backprop::Full, &loss)
            .unwrap();
        close(&format!("loss, step {step}"), &l_gpu, &l_cpu, 1e-5);
        for ((name, v_cpu), (_, v_gpu)) in cpu_sgd.params().iter().zip(gpu_sgd.params()) {
            let (a, b) = (g_gpu.get(v_gpu).unwrap(), g_cpu.get(v_cpu).unwrap());
            close(&format!("gradient of {name}, step {step}"), a, b, 1e-4);
        }
        cpu_sgd.step(&g_cpu, 0.05).unwrap();
        gpu_sgd.step(&g_gpu, 0.05).unwrap();
    }
    // Weights, running statistics and the counter; the state is on the CPU.
    let cpu_state = cpu_model.state().unwrap();
    let gpu_state = gpu_model.state().unwrap();
    for ((name, a), (_, b)) in gpu_state.iter().zip(&cpu_state) {
        assert!(a.device().is_cpu(), "{name} is saved from the CPU");
        close(name, a, b, 1e-4);
    }
    for ((name, a), (_, b)) in gpu_sgd.buffers().iter().zip(cpu_sgd.buffers()) {
        close(&format!("momentum of {name}"), a, b, 1e-4);
    }
    let (f_cpu, z_cpu) = cpu_model.infer(&x_cpu).unwrap();
    let (f_gpu, z_gpu) = gpu_model.infer(&x_gpu).unwrap();
    close("eval features", &f_gpu, &f_cpu, 1e-4);
    close("eval outputs", &z_gpu, &z_cpu, 1e-4);
    // The project stage's pass: only the output layer gets a gradient.
    let (l_cpu, _) = cpu_model
        .loss_and_grads(
            &x_cpu,
            Backprop::OutputOnly,
            &Contrastive::new(Similarity::Cauchy, None),
        )
        .unwrap();
    let (l_gpu, _) = gpu_model
        .loss_and_grads(
            &x_gpu,
            Backprop::OutputOnly,
            &Contrastive::new(Similarity::Cauchy, None),
        )
        .unwrap();
    close("output-only loss", &l_gpu, &l_cpu, 1e-5);
    // Saved from the GPU, loaded on the CPU: the same bytes as the GPU's state.
    let bytes = gpu_model.to_safetensors().unwrap();
    let back = Model::load_bytes(std::path::Path::new("mem"), &bytes, &arch, &Device::Cpu).unwrap();
    assert_eq!(back.to_safetensors().unwrap(), bytes);
}

/// The bits of a GPU tensor.
fn bits(t: &Tensor) -> Vec<u32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

/// The loss kernels (`cuda::info_nce_cauchy`) against candle's graph of the
/// same loss on the CPU, value and gradient by the views, at the shapes the
/// stages use (2-D maps with the demo's map scale, 128-D pretraining at
/// 1,024 and 2,048 views) and odd ones; twice on the GPU, the same bits.
#[test]
fn the_loss_kernels_agree_with_the_graph_on_the_cpu() {
    let Some(gpu) = cuda() else { return };
    let cases: [(usize, usize, Option<f64>); 6] = [
        (8, 2, None),
        (300, 2, Some(11.0)),
        (512, 2, Some(11.0)),
        (512, 2, None),
        (1024, 128, None),
        (2048, 128, None),
    ];
    for (rows, dim, map_scale) in cases {
        let what = format!("{rows} views of {dim} coordinates, map scale {map_scale:?}");
        let mut rng = tsimcne_rng::SplitMix64::keyed(&[rows as u64, dim as u64]);
        let v: Vec<f32> = (0..rows * dim)
            .map(|_| rng.uniform(-2.0, 2.0) as f32)
            .collect();
        let objective = Contrastive::new(Similarity::Cauchy, map_scale);
        let zc = Var::from_vec(v.clone(), (rows, dim), &Device::Cpu).unwrap();
        let lc = objective.loss(zc.as_tensor()).unwrap();
        let gc = lc.backward().unwrap().remove(zc.as_tensor()).unwrap();
        let zg = Tensor::from_vec(v, (rows, dim), &gpu).unwrap();
        let (lg, gg) = tsimcne_model::cuda::info_nce_cauchy(&zg, map_scale).unwrap();
        close(&format!("{what}: loss"), &lg, &lc, 1e-5);
        close_rel(&format!("{what}: gradient"), &gg, &gc, 1e-4);
        let (lg2, gg2) = tsimcne_model::cuda::info_nce_cauchy(&zg, map_scale).unwrap();
        assert_eq!(
            bits(&lg),
            bits(&lg2),
            "{what}: loss bits differ between runs"
        );
        assert_eq!(
            bits(&gg),
            bits(&gg2),
            "{what}: gradient bits differ between runs"
        );
    }
}

/// A training pass with the loss kernels gives the graph's loss and every
/// gradient, in the full pass, the project stage's (the output layer
/// only) and the pass with a frozen prefix (on candle's backbone), with and
/// without the map scale, on a 2-D head.
#[test]
fn passes_with_the_loss_kernels_agree_with_the_graph() {
    let Some(gpu) = cuda() else { return };
    let arch = preset("tiny", 3, 2).unwrap();
    let dims = (32, 3, 16, 16);
    let x = Tensor::from_vec(batch(32, 3, 16), dims, &gpu).unwrap();
    for pass in [Some(Backprop::Full), Some(Backprop::OutputOnly), None] {
        for map_scale in [None, Some(11.0)] {
            let what = format!("{pass:?} (None: one block frozen), map scale {map_scale:?}");
            let objective = Contrastive::new(Similarity::Cauchy, map_scale);
            let mut graph = Model::new(&arch, 5, &gpu).unwrap();
            let mut kernels = Model::new(&arch, 5, &gpu).unwrap();
            for m in [&mut graph, &mut kernels] {
                m.set_kernels(Kernels::Fast).unwrap();
            }
            kernels.set_gpu_loss(GpuLoss::Kernels);
            let run = |m: &mut Model| match pass {
                Some(backprop) => m.loss_and_grads(&x, backprop, &objective).unwrap(),
                None => m.loss_and_grads_frozen(&x, 1, &objective).unwrap(),
            };
            let (lg, gg) = run(&mut graph);
            let (lk, gk) = run(&mut kernels);
            close(&format!("{what}: loss"), &lk, &lg, 1e-5);
            for ((name, vg), (_, vk)) in graph.trainable(None).iter().zip(kernels.trainable(None)) {
                match (gg.get(vg.as_tensor()), gk.get(vk.as_tensor())) {
                    (Some(a), Some(b)) => {
                        close_rel(&format!("{what}: gradient of {name}"), b, a, 1e-4)
                    }
                    (None, None) => {}
                    (a, b) => panic!(
                        "{what}: {name} has a gradient with the graph: {}, with the kernels: {}",
                        a.is_some(),
                        b.is_some()
                    ),
                }
            }
        }
    }
}
