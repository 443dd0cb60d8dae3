//! Our GPU backbone (`tsimcne_model::cuda`) against our CPU backbone, kernel
//! by kernel through the model: training-mode outputs, running statistics
//! and every parameter gradient, eval-mode features, on odd shapes (1 and 3
//! channels, odd and non-square sizes, stride-2 and 1×1 shortcut
//! convolutions, batch 1); and the GPU augmentation against the CPU's, bit
//! for bit. Built with `--features cuda`; runs with
//! `TSIMCNE_TEST_CUDA=1` on a machine with an NVIDIA GPU, skipped with a note
//! otherwise.

mod augment_cases;
mod common;

use candle_core::{Device, Tensor};
use common::{arch, image_values, loss};
use tsimcne_model::{
    Backprop, BnSums, ConvMath, DeviceSpec, Kernels, MemoryFormat, Model, ResNetArch,
};

fn cuda() -> Option<Device> {
    if std::env::var_os("TSIMCNE_TEST_CUDA").is_none() {
        eprintln!("note: GPU backbone check skipped; set TSIMCNE_TEST_CUDA=1 on a GPU machine");
        return None;
    }
    Some(
        DeviceSpec::Cuda(0)
            .open()
            .expect("TSIMCNE_TEST_CUDA=1, but no CUDA device"),
    )
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, rel: f32) {
    common::assert_close(what, a, b, rel, ("GPU", "CPU"));
}

/// What [`check`] compares.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Losses, running statistics, eval outputs and every gradient.
    Everything,
    /// All but the gradients: resnet18 at a small batch amplifies float
    /// rounding in its gradients (on the CPU, candle's path and ours differ
    /// by up to 7 % of a tensor's largest gradient at 16 images).
    Values,
}

/// The GPU backbone's forms checked: each way of summing the batch-norm
/// statistics in NCHW, and channels-last (whose sums are always split).
const FORMS: [(BnSums, MemoryFormat); 3] = [
    (BnSums::PerChannel, MemoryFormat::Nchw),
    (BnSums::Split, MemoryFormat::Nchw),
    (BnSums::Split, MemoryFormat::Nhwc),
];

/// [`check_with`] for each of [`FORMS`].
fn check(arch: &ResNetArch, n: usize, h: usize, w: usize, compare: Compare) {
    for form in FORMS {
        check_with(arch, n, h, w, compare, form);
    }
}

fn check_with(
    arch: &ResNetArch,
    n: usize,
    h: usize,
    w: usize,
    compare: Compare,
    (sums, format): (BnSums, MemoryFormat),
) {
    let Some(gpu) = cuda() else { return };
    let pixels = image_values(n, arch.in_channels, h, w, (n * h * w) as u64);
    let dims = (n, arch.in_channels, h, w);
    let xc = Tensor::from_vec(pixels.clone(), dims, &Device::Cpu).unwrap();
    let xg = Tensor::from_vec(pixels, dims, &gpu).unwrap();
    let mut cpu = Model::new(arch, 3, &Device::Cpu).unwrap();
    let mut gm = Model::new(arch, 3, &gpu).unwrap();
    gm.set_kernels(Kernels::Fast).unwrap();
    gm.set_bn_sums(sums);
    gm.set_memory_format(format);
    let sums = format!("{sums:?} {format:?}");
    for step in 0..2 {
        let (lg, gg) = gm.loss_and_grads(&xg, Backprop::Full, &loss).unwrap();
        let (lc, gc) = cpu.loss_and_grads(&xc, Backprop::Full, &loss).unwrap();
        assert_close(&format!("{sums} step {step} loss"), &lg, &lc, 1e-4);
        let trainable = if compare == Compare::Everything {
            cpu.trainable(None)
        } else {
            Vec::new()
        };
        for (name, var) in trainable {
            let gv = &gm.vars()[&name];
            let g_gpu = gg
                .get(gv.as_tensor())
                .unwrap_or_else(|| panic!("no GPU gradient for {name}"));
            assert_close(
                &format!("{sums} step {step} grad {name}"),
                g_gpu,
                gc.get(var.as_tensor()).unwrap(),
                2e-3,
            );
        }
        for (name, var) in cpu.vars() {
            if name.contains("running") {
                assert_close(&name, gm.vars()[&name].as_tensor(), var.as_tensor(), 1e-4);
            }
        }
    }
    let (fg, zg) = gm.infer(&xg).unwrap();
    let (fc, zc) = cpu.infer(&xc).unwrap();
    assert_close(&format!("{sums} eval features"), &fg, &fc, 1e-4);
    assert_close(&format!("{sums} eval outputs"), &zg, &zc, 1e-4);
    let (lg, _) = gm.loss_and_grads(&xg, Backprop::OutputOnly, &loss).unwrap();
    let (lc, _) = cpu
        .loss_and_grads(&xc, Backprop::OutputOnly, &loss)
        .unwrap();
    assert_close(&format!("{sums} output-only loss"), &lg, &lc, 1e-4);
}

/// Needs no GPU (it reads the build's PTX), so it runs wherever the CUDA
/// build's tests run.
#[test]
fn the_kernel_list_names_every_kernel_of_the_source() {
    tsimcne_model::cuda::check_kernel_list().unwrap();
}

/// `DeviceSpec::open` keeps freed memory in the device's pool, and the
/// setting reads back.
#[test]
fn an_opened_gpu_keeps_the_memory_a_run_frees() {
    use tsimcne_model::cuda::{FreedMemory, freed_memory, set_freed_memory};
    let Some(gpu) = cuda() else { return };
    assert_eq!(freed_memory(&gpu).unwrap(), Some(FreedMemory::Keep));
    set_freed_memory(&gpu, FreedMemory::Release).unwrap();
    assert_eq!(freed_memory(&gpu).unwrap(), Some(FreedMemory::Release));
    set_freed_memory(&gpu, FreedMemory::Keep).unwrap();
    assert_eq!(freed_memory(&gpu).unwrap(), Some(FreedMemory::Keep));
    assert_eq!(freed_memory(&Device::Cpu).unwrap(), None);
}

/// `DeviceSpec::open` turns off cudarc's events at each allocation, which
/// only a second stream would use; a training step of our backbone keeps
/// the device on its one stream (else the setting would be refused), and the
/// setting reads back.
#[test]
fn an_opened_gpu_runs_one_stream_without_allocation_events() {
    use tsimcne_model::cuda::{AllocationEvents, allocation_events, set_allocation_events};
    let Some(gpu) = cuda() else { return };
    assert_eq!(allocation_events(&gpu), Some(AllocationEvents::None));
    let arch = arch(3, vec![8, 8, 16, 16], vec![1, 1, 1, 1]);
    let x = Tensor::from_vec(image_values(4, 3, 16, 16, 5), (4, 3, 16, 16), &gpu).unwrap();
    let mut m = Model::new(&arch, 3, &gpu).unwrap();
    m.set_kernels(Kernels::Fast).unwrap();
    m.set_bn_sums(BnSums::Split);
    m.loss_and_grads(&x, Backprop::Full, &loss).unwrap();
    set_allocation_events(&gpu, AllocationEvents::Made).unwrap();
    assert_eq!(allocation_events(&gpu), Some(AllocationEvents::Made));
    set_allocation_events(&gpu, AllocationEvents::None).unwrap();
    assert_eq!(allocation_events(&gpu), Some(AllocationEvents::None));
    assert_eq!(allocation_events(&Device::Cpu), None);
}

#[test]
fn grey_odd_sized_images_with_stride_two_shortcuts() {
    check(
        &arch(1, vec![4, 6, 8, 10], vec![1, 1, 1, 1]),
        3,
        9,
        17,
        Compare::Everything,
    );
}

#[test]
fn colour_images_two_blocks_per_stage() {
    check(
        &arch(3, vec![5, 5, 7, 8], vec![2, 1, 2, 1]),
        4,
        12,
        12,
        Compare::Everything,
    );
}

#[test]
fn batch_of_one() {
    check(
        &arch(3, vec![4, 8, 8, 16], vec![1, 1, 1, 1]),
        1,
        16,
        16,
        Compare::Everything,
    );
}

#[test]
fn the_small_preset_on_fashion_mnist_shapes() {
    let a = tsimcne_model::preset("small", 1, 16).unwrap();
    check(&a, 6, 28, 28, Compare::Everything);
}

#[test]
fn resnet18_at_cifar_shapes_values() {
    let a = tsimcne_model::preset("resnet18", 3, 128).unwrap();
    check(&a, 16, 32, 32, Compare::Values);
}

#[test]
fn gpu_augmentation_gives_the_cpu_views_bits() {
    use tsimcne_augment::{AugmentConfig, Shape, pack_two_views, two_views_of};
    use tsimcne_model::cuda::GpuImages;
    let Some(gpu) = cuda() else { return };
    let (jittery, normalised) = (augment_cases::jittery(), augment_cases::normalised());
    let shapes = [
        (32, 32, 3, jittery.clone()),
        (28, 28, 1, jittery),
        (17, 23, 3, normalised),
    ];
    for (height, width, channels, cfg) in shapes {
        let shape = Shape {
            height,
            width,
            channels,
        };
        let rows = 40;
        let pixels: Vec<u8> = (0..rows * shape.len())
            .map(|k| ((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let table = GpuImages::upload(&gpu, &pixels, shape).unwrap();
        let first: Vec<usize> = (0..16).map(|i| (i * 7) % rows).collect();
        let second: Vec<usize> = (0..16).map(|i| (i * 11 + 3) % rows).collect();
        let ids: Vec<u64> = first.iter().map(|&i| i as u64).collect();
        let row = |i: usize| &pixels[i * shape.len()..(i + 1) * shape.len()];
        let a: Vec<&[u8]> = first.iter().map(|&i| row(i)).collect();
        let b: Vec<&[u8]> = second.iter().map(|&i| row(i)).collect();
        let mut want = vec![0.0f32; 32 * shape.len()];
        two_views_of(&a, &b, &ids, shape, &cfg, 5, 3, 4, &mut want);
        let (ints, floats) = pack_two_views(&first, &second, &ids, shape, &cfg, 5, 3);
        let got = table.views(&ints, &floats, &cfg).unwrap();
        assert_eq!(got.dims(), &[32, channels, height, width]);
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{shape:?}: {differ} of {} values differ from the CPU's",
            want.len()
        );
    }
    // Parameters that address pixels outside the table are refused.
    let shape = Shape {
        height: 4,
        width: 4,
        channels: 1,
    };
    let table = GpuImages::upload(&gpu, &[0u8; 32], shape).unwrap();
    let mut ints = [0i32; tsimcne_augment::VIEW_INTS];
    ints[3] = 4;
    ints[4] = 4;
    ints[8..12].copy_from_slice(&[0, 1, 2, 3]);
    assert!(
        table
            .views(&ints, &[0.0; 4], &AugmentConfig::default())
            .is_ok()
    );
    ints[0] = 2; // the table has rows 0 and 1
    assert!(
        table
            .views(&ints, &[0.0; 4], &AugmentConfig::default())
            .is_err()
    );
}

/// bf16 activations and convolutions (`ConvMath::Bf16`) against the CPU's
/// f32, in each of [`FORMS`]. bf16 keeps 8 bits of
/// mantissa (about 0.4 % a value), so the paths agree to a few per cent,
/// not within float rounding: the loss, the running statistics and the
/// eval features within 3 % of their largest value, every gradient within
/// 8 %.
#[test]
fn bf16_activations_agree_with_the_cpu_within_bf16_rounding() {
    let Some(gpu) = cuda() else { return };
    let arch = arch(3, vec![8, 8, 16, 16], vec![1, 1, 1, 1]);
    let (n, h, w) = (6, 16, 16);
    let pixels = image_values(n, 3, h, w, 17);
    let xc = Tensor::from_vec(pixels.clone(), (n, 3, h, w), &Device::Cpu).unwrap();
    let xg = Tensor::from_vec(pixels, (n, 3, h, w), &gpu).unwrap();
    for (sums, format) in FORMS {
        let mut cpu = Model::new(&arch, 3, &Device::Cpu).unwrap();
        let mut gm = Model::new(&arch, 3, &gpu).unwrap();
        gm.set_kernels(Kernels::Fast).unwrap();
        gm.set_conv_math(ConvMath::Bf16);
        gm.set_bn_sums(sums);
        gm.set_memory_format(format);
        let sums = format!("{sums:?} {format:?}");
        let (lg, gg) = gm.loss_and_grads(&xg, Backprop::Full, &loss).unwrap();
        let (lc, gc) = cpu.loss_and_grads(&xc, Backprop::Full, &loss).unwrap();
        assert_close(&format!("bf16 {sums} loss"), &lg, &lc, 3e-2);
        for (name, var) in cpu.trainable(None) {
            let g_gpu = gg
                .get(gm.vars()[&name].as_tensor())
                .unwrap_or_else(|| panic!("no GPU gradient for {name}"));
            assert_close(
                &format!("bf16 {sums} grad {name}"),
                g_gpu,
                gc.get(var.as_tensor()).unwrap(),
                8e-2,
            );
        }
        for (name, var) in cpu.vars() {
            if name.contains("running") {
                assert_close(&name, gm.vars()[&name].as_tensor(), var.as_tensor(), 3e-2);
            }
        }
        let (fg, _) = gm.infer(&xg).unwrap();
        let (fc, _) = cpu.infer(&xc).unwrap();
        assert_close(&format!("bf16 {sums} eval features"), &fg, &fc, 3e-2);
    }
}
