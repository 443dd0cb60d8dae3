//! The fast CPU backbone against candle's ops: outputs, running statistics
//! and every parameter gradient, on odd shapes (1 and 3 channels, odd sizes,
//! stride-2 and 1×1 shortcut convolutions, batch 1).

mod common;

use candle_core::{Device, Tensor};
use common::{arch, image_values, loss};
use tsimcne_model::{Backprop, Kernels, Model, ResNetArch};

fn images(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Tensor {
    let v = image_values(n, c, h, w, seed);
    Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap()
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, rel: f32) {
    common::assert_close(what, a, b, rel, ("fast", "candle"));
}

fn check(arch: &ResNetArch, n: usize, h: usize, w: usize) {
    let x = images(n, arch.in_channels, h, w, (n * h * w) as u64);
    let mut fast = Model::new(arch, 3, &Device::Cpu).unwrap();
    let mut slow = Model::new(arch, 3, &Device::Cpu).unwrap();
    fast.set_kernels(Kernels::Fast).unwrap();
    slow.set_kernels(Kernels::Candle).unwrap();
    for step in 0..2 {
        let (lf, gf) = fast.loss_and_grads(&x, Backprop::Full, &loss).unwrap();
        let (ls, gs) = slow.loss_and_grads(&x, Backprop::Full, &loss).unwrap();
        assert_close(&format!("step {step} loss"), &lf, &ls, 1e-4);
        for (name, var) in slow.trainable(None) {
            let fv = &fast.vars()[&name];
            let g_fast = gf
                .get(fv.as_tensor())
                .unwrap_or_else(|| panic!("no fast gradient for {name}"));
            let g_slow = gs.get(var.as_tensor()).unwrap();
            assert_close(&format!("step {step} grad {name}"), g_fast, g_slow, 2e-3);
        }
        // Running statistics after the training pass.
        for (name, var) in slow.vars() {
            if name.contains("running") {
                assert_close(&name, fast.vars()[&name].as_tensor(), var.as_tensor(), 1e-4);
            }
        }
    }
    assert_eq!(fast.num_batches_tracked, slow.num_batches_tracked);
    let (ff, zf) = fast.infer(&x).unwrap();
    let (fs, zs) = slow.infer(&x).unwrap();
    assert_close("eval features", &ff, &fs, 1e-4);
    assert_close("eval outputs", &zf, &zs, 1e-4);
    // The output-only pass: same loss, and only head gradients.
    let (lf, gf) = fast
        .loss_and_grads(&x, Backprop::OutputOnly, &loss)
        .unwrap();
    let (ls, gs) = slow
        .loss_and_grads(&x, Backprop::OutputOnly, &loss)
        .unwrap();
    assert_close("output-only loss", &lf, &ls, 1e-4);
    for (name, var) in slow.trainable(Some(&["projection_head.layers.2"])) {
        let fv = &fast.vars()[&name];
        assert_close(
            &name,
            gf.get(fv.as_tensor()).unwrap(),
            gs.get(var.as_tensor()).unwrap(),
            1e-3,
        );
    }
}

#[test]
fn grey_odd_sized_images_with_stride_two_shortcuts() {
    // Non-square, odd at every stage: candle's own conv2d backward mixes up
    // the output padding when height and width differ in parity, so the
    // reference needs the same parity in both.
    check(&arch(1, vec![4, 6, 8, 10], vec![1, 1, 1, 1]), 3, 9, 17);
}

#[test]
fn colour_images_two_blocks_per_stage() {
    check(&arch(3, vec![5, 5, 7, 8], vec![2, 1, 2, 1]), 4, 12, 12);
}

#[test]
fn batch_of_one() {
    check(&arch(3, vec![4, 8, 8, 16], vec![1, 1, 1, 1]), 1, 16, 16);
}

#[test]
fn the_small_preset_on_fashion_mnist_shapes() {
    let a = tsimcne_model::preset("small", 1, 16).unwrap();
    check(&a, 6, 28, 28);
}

/// Ours are the CPU's default and run there in every build; candle's can
/// be chosen. (Refusing ours on a GPU without the CUDA build needs a GPU
/// device, which a CPU-only build cannot make: `tests/cuda.rs` of
/// tsimcne-train covers the GPU side.)
#[test]
fn fast_kernels_are_the_cpu_default_and_candle_can_be_chosen() {
    let a = arch(1, vec![4, 4, 4, 4], vec![1, 1, 1, 1]);
    assert!(Kernels::fast_runs_on(&Device::Cpu));
    assert_eq!(Kernels::default_for(&Device::Cpu), Kernels::Fast);
    let mut m = Model::new(&a, 0, &Device::Cpu).unwrap();
    assert_eq!(m.kernels(), Kernels::Fast, "the CPU default");
    m.set_kernels(Kernels::Candle).unwrap();
    assert_eq!(m.kernels(), Kernels::Candle);
}

/// Frozen first blocks: the fast path (eval-mode prefix, then a training
/// pass from the first free block) against candle's (the same network with
/// the prefix in eval mode and cut from the graph). Same loss, the same
/// gradients for every free parameter and none for the frozen ones, the
/// frozen running statistics untouched and the free ones updated alike.
fn check_frozen(arch: &ResNetArch, n: usize, h: usize, w: usize, blocks: usize) {
    let x = images(n, arch.in_channels, h, w, 11 + blocks as u64);
    let mut fast = Model::new(arch, 5, &Device::Cpu).unwrap();
    let mut slow = Model::new(arch, 5, &Device::Cpu).unwrap();
    fast.set_kernels(Kernels::Fast).unwrap();
    slow.set_kernels(Kernels::Candle).unwrap();
    // Running statistics away from their initial 0 and 1, so eval mode differs
    // from training mode.
    for _ in 0..2 {
        fast.loss_and_grads(&x, Backprop::Full, &loss).unwrap();
        slow.loss_and_grads(&x, Backprop::Full, &loss).unwrap();
    }
    let before = fast.vars();
    let before: Vec<(String, Vec<f32>)> = before
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    let frozen: Vec<String> = {
        let layers = (0..=arch.blocks.len())
            .find(|&l| arch.blocks_in(l) == blocks)
            .expect("whole layers");
        arch.frozen_prefixes(layers)
    };
    let is_frozen = |name: &str| frozen.iter().any(|p| name.starts_with(p.as_str()));
    let (lf, gf) = fast.loss_and_grads_frozen(&x, blocks, &loss).unwrap();
    let (ls, gs) = slow.loss_and_grads_frozen(&x, blocks, &loss).unwrap();
    assert_close("frozen loss", &lf, &ls, 1e-4);
    for (name, var) in slow.trainable(None) {
        let fv = &fast.vars()[&name];
        match (gf.get(fv.as_tensor()), gs.get(var.as_tensor())) {
            (Some(a), Some(b)) => {
                assert!(!is_frozen(&name), "{name} is frozen but has a gradient");
                assert_close(&format!("frozen grad {name}"), a, b, 2e-3);
            }
            (None, None) => assert!(is_frozen(&name), "{name} has no gradient"),
            (a, b) => panic!("{name}: fast {} vs candle {}", a.is_some(), b.is_some()),
        }
    }
    for (name, old) in before {
        if !name.contains("running") {
            continue;
        }
        let now: Vec<f32> = fast.vars()[&name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            is_frozen(&name),
            now == old,
            "{name} changed: {}",
            now != old
        );
        assert_close(
            &name,
            fast.vars()[&name].as_tensor(),
            slow.vars()[&name].as_tensor(),
            1e-4,
        );
    }
    assert_eq!(fast.num_batches_tracked, slow.num_batches_tracked);
}

#[test]
fn frozen_layers_match_candle() {
    let a = arch(3, vec![5, 5, 7, 8], vec![2, 1, 2, 1]);
    for layers in 1..=4 {
        check_frozen(&a, 4, 12, 12, a.blocks_in(layers));
    }
    let g = arch(1, vec![4, 6, 8, 10], vec![1, 1, 1, 1]);
    check_frozen(&g, 3, 9, 17, g.blocks_in(2));
}

/// `loss_and_grads_from` on the prefix computed for a larger batch, one
/// image at a time and gathered: the prefix of an image does not depend on
/// the batch it was computed in (the trainer caches it per image).
#[test]
fn a_prefix_is_per_image() {
    let a = tsimcne_model::preset("small", 1, 16).unwrap();
    let m = Model::new(&a, 2, &Device::Cpu).unwrap();
    let x = images(6, 1, 14, 14, 4);
    let blocks = a.blocks_in(2);
    let all = m.frozen_prefix(&x, blocks).unwrap();
    let per = all.data.len() / 6;
    for i in 0..6 {
        let one = m
            .frozen_prefix(&x.narrow(0, i, 1).unwrap(), blocks)
            .unwrap();
        assert_eq!((one.h, one.w, one.c), (all.h, all.w, all.c));
        let scale = one.data.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (a, b) in one.data.iter().zip(&all.data[i * per..(i + 1) * per]) {
            assert!((a - b).abs() <= 1e-5 * scale, "image {i}: {a} vs {b}");
        }
    }
}
