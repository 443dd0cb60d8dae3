//! Golden tests against PyTorch (fixtures from tests/golden/make_golden.py)
//! and finite-difference checks of the loss gradients.

mod common;

use common::values;
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use tsimcne_model::{Backprop, Model, Objective, preset};
use tsimcne_train::{Contrastive, Sgd, SgdConfig, Similarity, fixed_scale, info_nce, lr_schedule};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(golden_dir().join("golden.safetensors"), &Device::Cpu).unwrap()
}

/// Asserts |a − b| ≤ atol + rtol·|b| elementwise.
fn close(what: &str, a: &Tensor, b: &Tensor, rtol: f64, atol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (values(a), values(b));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: ours {x}, reference {y}"
        );
    }
}

fn f32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

/// A loss of the views `[a; b]` (fixture keys `{inputs}.a`, `{inputs}.b`)
/// in f32: its value and the gradients of `a` and `b` against PyTorch's
/// (`{expected}.value`, `.grad_a`, `.grad_b`).
fn check_loss_against_pytorch(
    g: &HashMap<String, Tensor>,
    what: &str,
    inputs: &str,
    expected: &str,
    loss_of: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) {
    let key = |s: &str| g[&format!("{expected}.{s}")].clone();
    let a = Var::from_tensor(&f32(&g[&format!("{inputs}.a")])).unwrap();
    let b = Var::from_tensor(&f32(&g[&format!("{inputs}.b")])).unwrap();
    let z = Tensor::cat(&[a.as_tensor(), b.as_tensor()], 0).unwrap();
    let loss = loss_of(&z).unwrap();
    close(
        &format!("{what} value"),
        &loss.reshape(1).unwrap(),
        &key("value"),
        1e-5,
        1e-6,
    );
    let grads = loss.backward().unwrap();
    close(
        &format!("{what} grad a"),
        grads.get(&a).unwrap(),
        &key("grad_a"),
        1e-4,
        1e-6,
    );
    close(
        &format!("{what} grad b"),
        grads.get(&b).unwrap(),
        &key("grad_b"),
        1e-4,
        1e-6,
    );
}

fn tiny() -> Model {
    let arch = preset("tiny", 3, 8).unwrap();
    Model::load(
        &golden_dir().join("tiny_weights.safetensors"),
        &arch,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn model_forward_matches_pytorch_in_eval_and_train_mode() {
    let g = golden();
    let x = f32(&g["model.x"]);
    let mut m = tiny();
    let eval = m.forward_t(&x, false).unwrap();
    close("eval output", &eval, &g["model.eval_out"], 1e-4, 1e-5);
    let train = m.forward_t(&x, true).unwrap();
    close("train output", &train, &g["model.train_out"], 1e-4, 1e-5);
    // One training pass moved the running statistics exactly as PyTorch's.
    let state: HashMap<String, Tensor> = m.state().unwrap().into_iter().collect();
    for name in [
        "backbone.bn1.running_mean",
        "backbone.bn1.running_var",
        "backbone.layer2.0.shortcut.1.running_var",
    ] {
        close(
            name,
            &state[name],
            &g[&format!("model.after_train.{name}")],
            1e-4,
            1e-6,
        );
    }
    assert_eq!(
        state["backbone.bn1.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap(),
        g["model.after_train.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap()
    );
}

#[test]
fn model_gradients_match_pytorch() {
    let g = golden();
    let mut m = tiny();
    let x = Var::from_tensor(&f32(&g["model.x"])).unwrap();
    let y = m.forward_t(x.as_tensor(), true).unwrap();
    let loss = (y * f32(&g["model.r"])).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    close(
        "grad x",
        grads.get(&x).unwrap(),
        &g["model.grad.x"],
        1e-3,
        1e-5,
    );
    let vars = m.vars();
    for name in [
        "backbone.conv1.weight",
        "backbone.layer3.0.shortcut.0.weight",
        "backbone.layer4.0.bn2.weight",
        "backbone.layer2.0.bn1.bias",
        "projection_head.layers.0.weight",
        "projection_head.layers.2.bias",
    ] {
        let got = grads
            .get(&vars[name])
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        close(name, got, &g[&format!("model.grad.{name}")], 1e-3, 1e-5);
    }
}

#[test]
fn weights_round_trip_through_safetensors_bit_exactly() {
    let m = tiny();
    let bytes = m.to_safetensors().unwrap();
    let again =
        Model::load_bytes(std::path::Path::new("mem"), &bytes, &m.arch, &Device::Cpu).unwrap();
    assert_eq!(again.to_safetensors().unwrap(), bytes);
    // And the PyTorch file's tensors come back unchanged.
    let reference =
        candle_core::safetensors::load(golden_dir().join("tiny_weights.safetensors"), &Device::Cpu)
            .unwrap();
    let ours: HashMap<String, Tensor> = m.state().unwrap().into_iter().collect();
    assert_eq!(reference.len(), ours.len());
    for (name, t) in &reference {
        assert_eq!(values(t), values(&ours[name]), "{name}");
    }
}

#[test]
fn losses_and_their_gradients_match_pytorch() {
    let g = golden();
    for d in [2, 16] {
        for (kind, sim) in [
            ("cauchy", Similarity::Cauchy),
            ("cosine", Similarity::SIMCLR),
        ] {
            check_loss_against_pytorch(
                &g,
                &format!("{kind} d{d}"),
                &format!("loss.{kind}.d{d}"),
                &format!("loss.{kind}.d{d}"),
                |z| info_nce(z, sim),
            );
        }
    }
}

/// Central differences in f64 agree with the autograd gradient.
#[test]
fn loss_gradients_match_finite_differences() {
    let g = golden();
    for (kind, sim) in [
        ("cauchy", Similarity::Cauchy),
        ("cosine", Similarity::SIMCLR),
    ] {
        let a = g[&format!("loss.{kind}.d2.a")].clone();
        let b = g[&format!("loss.{kind}.d2.b")].clone();
        let z0 = Tensor::cat(&[&a, &b], 0).unwrap(); // f64
        let zv = Var::from_tensor(&z0).unwrap();
        let grad = info_nce(zv.as_tensor(), sim).unwrap().backward().unwrap();
        let grad = values(grad.get(&zv).unwrap());
        let base = values(&z0);
        let h = 1e-6;
        let f = |v: &[f64]| -> f64 {
            let z = Tensor::from_vec(v.to_vec(), z0.dims(), &Device::Cpu).unwrap();
            info_nce(&z, sim).unwrap().to_scalar::<f64>().unwrap()
        };
        for i in 0..base.len() {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (f(&p) - f(&m)) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-7 + 1e-5 * fd.abs(),
                "{kind} [{i}]: fd {fd}, autograd {}",
                grad[i]
            );
        }
    }
}

/// `--map-scale 11`: the views centred and scaled before the Cauchy loss;
/// value and gradients (through the scaling) against PyTorch.
#[test]
fn fixed_scale_loss_and_its_gradients_match_pytorch() {
    let g = golden();
    check_loss_against_pytorch(
        &g,
        "scale 11",
        "loss.cauchy.d2",
        "loss.cauchy_scale11.d2",
        |z| info_nce(&fixed_scale(z, 11.0)?, Similarity::Cauchy),
    );
}

/// The fixed-scale loss: central differences in f64 agree with autograd,
/// and the loss does not change when the whole map is shifted or scaled.
#[test]
fn fixed_scale_loss_gradients_match_finite_differences_and_ignore_shift_and_scale() {
    let g = golden();
    let z0 = Tensor::cat(&[&g["loss.cauchy.d2.a"], &g["loss.cauchy.d2.b"]], 0).unwrap(); // f64
    let loss_of = |z: &Tensor| -> f64 {
        info_nce(&fixed_scale(z, 11.0).unwrap(), Similarity::Cauchy)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let moved = ((&z0 * 3.5).unwrap() + 40.0).unwrap();
    let (l0, l1) = (loss_of(&z0), loss_of(&moved));
    assert!((l0 - l1).abs() < 1e-9 * l0.abs().max(1.0), "{l0} vs {l1}");
    let zv = Var::from_tensor(&z0).unwrap();
    let grad = info_nce(
        &fixed_scale(zv.as_tensor(), 11.0).unwrap(),
        Similarity::Cauchy,
    )
    .unwrap()
    .backward()
    .unwrap();
    let grad = values(grad.get(&zv).unwrap());
    let base = values(&z0);
    let h = 1e-6;
    for i in 0..base.len() {
        let (mut p, mut m) = (base.clone(), base.clone());
        p[i] += h;
        m[i] -= h;
        let at = |v: Vec<f64>| loss_of(&Tensor::from_vec(v, z0.dims(), &Device::Cpu).unwrap());
        let fd = (at(p) - at(m)) / (2.0 * h);
        assert!(
            (fd - grad[i]).abs() < 1e-7 + 1e-5 * fd.abs(),
            "[{i}]: fd {fd}, autograd {}",
            grad[i]
        );
    }
    // The scaled views: mean 0, root mean square coordinate 11.
    let s = values(&fixed_scale(&z0, 11.0).unwrap());
    let (n, d) = z0.dims2().unwrap();
    for c in 0..d {
        let mean: f64 = (0..n).map(|r| s[r * d + c]).sum::<f64>() / n as f64;
        assert!(mean.abs() < 1e-9, "column {c} mean {mean}");
    }
    let rms = (s.iter().map(|v| v * v).sum::<f64>() / s.len() as f64).sqrt();
    assert!((rms - 11.0).abs() < 1e-9, "{rms}");
}

/// The views `[a; b]` of a loss fixture as host rows: (rows, dim, values).
fn host_rows(g: &HashMap<String, Tensor>, inputs: &str) -> (usize, usize, Vec<f32>) {
    let z = Tensor::cat(&[&g[&format!("{inputs}.a")], &g[&format!("{inputs}.b")]], 0).unwrap();
    let (rows, dim) = z.dims2().unwrap();
    let v = f32(&z).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (rows, dim, v)
}

/// The loss on host rows (the CPU's fast path, `tsimcne_ops::contrastive`)
/// against PyTorch, on the graph's fixtures: value and gradients.
#[test]
fn host_losses_and_their_gradients_match_pytorch() {
    let g = golden();
    for (what, inputs, expected, scale) in [
        ("cauchy d2", "loss.cauchy.d2", "loss.cauchy.d2", None),
        ("cauchy d16", "loss.cauchy.d16", "loss.cauchy.d16", None),
        (
            "scale 11",
            "loss.cauchy.d2",
            "loss.cauchy_scale11.d2",
            Some(11.0),
        ),
    ] {
        let (rows, dim, z) = host_rows(&g, inputs);
        let objective = Contrastive::new(Similarity::Cauchy, scale);
        let (loss, grad) = objective
            .on_host()
            .expect("the Cauchy loss has a host form")
            .loss_and_grad(&z, rows, dim);
        let key = |s: &str| g[&format!("{expected}.{s}")].clone();
        let t = |v: Vec<f32>, r: usize| Tensor::from_vec(v, (r, dim), &Device::Cpu).unwrap();
        close(
            &format!("host {what} value"),
            &Tensor::new(&[loss], &Device::Cpu).unwrap(),
            &key("value"),
            1e-5,
            1e-6,
        );
        let half = rows / 2 * dim;
        close(
            &format!("host {what} grad a"),
            &t(grad[..half].to_vec(), rows / 2),
            &key("grad_a"),
            1e-4,
            1e-6,
        );
        close(
            &format!("host {what} grad b"),
            &t(grad[half..].to_vec(), rows / 2),
            &key("grad_b"),
            1e-4,
            1e-6,
        );
    }
    // The cosine loss has no host form: the graph runs it.
    assert!(
        Contrastive::new(Similarity::SIMCLR, None)
            .on_host()
            .is_none()
    );
}

/// The host loss's gradient against central differences of its own value
/// (in f32, so at a coarse step and tolerance), with and without the fixed
/// map scale.
#[test]
fn host_loss_gradients_match_finite_differences() {
    let g = golden();
    for (inputs, scale) in [
        ("loss.cauchy.d2", Some(11.0)),
        ("loss.cauchy.d2", None),
        ("loss.cauchy.d16", None),
    ] {
        let (rows, dim, z) = host_rows(&g, inputs);
        let objective = Contrastive::new(Similarity::Cauchy, scale);
        let host = objective.on_host().unwrap();
        let (_, grad) = host.loss_and_grad(&z, rows, dim);
        let h = 2e-3f32;
        for i in 0..z.len() {
            let (mut p, mut m) = (z.clone(), z.clone());
            p[i] += h;
            m[i] -= h;
            let fd = f64::from(
                host.loss_and_grad(&p, rows, dim).0 - host.loss_and_grad(&m, rows, dim).0,
            ) / f64::from(2.0 * h);
            let got = f64::from(grad[i]);
            assert!(
                (fd - got).abs() < 5e-4 + 3e-2 * fd.abs(),
                "{inputs} {scale:?} [{i}]: fd {fd}, host {got}"
            );
        }
    }
}

/// A training step with the head and the loss on host rows (the fast path
/// with [`Contrastive`]) gives the loss and every gradient of the same step
/// with them on candle's graph: the whole network, the first blocks frozen,
/// and the output layer alone (`project`).
#[test]
fn host_head_and_loss_give_the_graphs_step() {
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Full,
        Frozen(usize),
        OutputOnly,
    }
    let g = golden();
    let x = f32(&g["model.x"]);
    let objective = Contrastive::new(Similarity::Cauchy, Some(11.0));
    let graph = |z: &Tensor| objective.loss(z);
    for step in [Step::Full, Step::Frozen(2), Step::OutputOnly] {
        let (mut on_host, mut on_graph) = (tiny(), tiny());
        let ((lh, gh), (lg, gg)) = match step {
            Step::Full => (
                on_host
                    .loss_and_grads(&x, Backprop::Full, &objective)
                    .unwrap(),
                on_graph.loss_and_grads(&x, Backprop::Full, &graph).unwrap(),
            ),
            Step::Frozen(blocks) => (
                on_host
                    .loss_and_grads_frozen(&x, blocks, &objective)
                    .unwrap(),
                on_graph.loss_and_grads_frozen(&x, blocks, &graph).unwrap(),
            ),
            Step::OutputOnly => (
                on_host
                    .loss_and_grads(&x, Backprop::OutputOnly, &objective)
                    .unwrap(),
                on_graph
                    .loss_and_grads(&x, Backprop::OutputOnly, &graph)
                    .unwrap(),
            ),
        };
        close(
            "loss",
            &lh.reshape(1).unwrap(),
            &lg.reshape(1).unwrap(),
            1e-5,
            1e-6,
        );
        let (vh, vg) = (on_host.vars(), on_graph.vars());
        let mut compared = 0;
        for (name, _) in on_host.trainable(None) {
            match (gh.get(vh[&name].as_tensor()), gg.get(vg[&name].as_tensor())) {
                (Some(a), Some(b)) => {
                    close(&format!("{step:?} {name}"), a, b, 1e-3, 1e-6);
                    compared += 1;
                }
                (None, None) => {}
                _ => panic!("{step:?} {name}: a gradient on one side only"),
            }
        }
        match step {
            // The output layer's weight and bias, nothing else.
            Step::OutputOnly => assert_eq!(compared, 2, "{step:?}"),
            _ => assert!(compared >= 4, "{step:?}: {compared} gradients compared"),
        }
    }
}

#[test]
fn self_pairs_are_excluded_and_the_loss_is_stable() {
    // Identical views: the positive pair has distance 0, yet nothing is NaN,
    // and far-apart clusters do not overflow.
    let z = Tensor::new(&[[0f32, 0.], [1e4, 0.], [0., 0.], [1e4, 0.]], &Device::Cpu).unwrap();
    let l = info_nce(&z, Similarity::Cauchy)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(l.is_finite() && l.abs() < 1e-3, "{l}");
    assert!(info_nce(&z.narrow(0, 0, 3).unwrap(), Similarity::Cauchy).is_err());
}

#[test]
fn sgd_step_matches_pytorch() {
    let g = golden();
    let w = Var::from_tensor(&f32(&g["sgd.w0"])).unwrap();
    let mut sgd = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default());
    for (grad, lr, after) in [
        ("sgd.g1", 0.1, "sgd.after_lr0.1"),
        ("sgd.g2", 0.05, "sgd.after_lr0.05"),
    ] {
        // A gradient store holding `grad` for w: backprop of sum(w * grad).
        let store = (w.as_tensor() * f32(&g[grad]))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        sgd.step(&store, lr).unwrap();
        close(after, w.as_tensor(), &g[after], 1e-5, 1e-6);
    }
    assert_eq!(sgd.buffers().len(), 1);
}

#[test]
fn schedule_matches_the_reference_formula() {
    let g = golden();
    for (e, w) in [(20, 5), (7, 0), (1000, 10), (3, 1)] {
        let ours = Tensor::new(lr_schedule(0.06, e, w), &Device::Cpu).unwrap();
        close(
            &format!("schedule e{e} w{w}"),
            &ours,
            &g[&format!("schedule.e{e}.w{w}")],
            1e-12,
            1e-15,
        );
    }
    assert_eq!(tsimcne_train::base_lr(512), 0.06);
}

/// Training a subset (the project stage's need): every other parameter is
/// bitwise unchanged; BatchNorm running statistics still move in training mode.
#[test]
fn sgd_only_touches_its_parameters() {
    let arch = preset("tiny", 1, 2).unwrap();
    let mut m = Model::new(&arch, 1, &Device::Cpu).unwrap();
    let before: HashMap<String, Vec<f64>> = m
        .state()
        .unwrap()
        .iter()
        .map(|(n, t)| (n.clone(), values(t)))
        .collect();
    let mut sgd = Sgd::new(
        m.trainable(Some(&["projection_head.layers.2"])),
        SgdConfig::default(),
    );
    let x = Tensor::rand(0f32, 1., (8, 1, 12, 12), &Device::Cpu).unwrap();
    let z = m.forward_t(&x, true).unwrap();
    let grads = info_nce(&z, Similarity::Cauchy)
        .unwrap()
        .backward()
        .unwrap();
    sgd.step(&grads, 0.1).unwrap();
    for (name, t) in m.state().unwrap() {
        let same = before[&name] == values(&t);
        let expect_change = name.starts_with("projection_head.layers.2")
            || name.contains("running_")
            || name.ends_with("num_batches_tracked");
        assert_eq!(!same, expect_change, "{name}");
    }
}

/// A PyTorch-exported file carries no config: its architecture is read off
/// the tensor shapes.
#[test]
fn architecture_is_inferred_from_a_pytorch_export() {
    let p = golden_dir().join("tiny_weights.safetensors");
    let arch = tsimcne_model::infer_arch(&p, &std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(arch, preset("tiny", 3, 8).unwrap());
    let e = tsimcne_model::infer_arch(&p, b"nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny_weights.safetensors"), "{e}");
}
