//! Every kernel against the stock candle op it replaces, forward and
//! gradients (candle's autograd), on random shapes: odd sizes, stride 2,
//! padding, 1×1 convolutions, batch 1.

use candle_core::{D, DType, Device, ModuleT, Tensor, Var};
use tsimcne_ops::ConvGeom;
use tsimcne_rng::SplitMix64;

fn random(len: usize, rng: &mut SplitMix64) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// NCHW tensor data → NHWC vector.
fn to_nhwc(t: &Tensor) -> Vec<f32> {
    t.permute((0, 2, 3, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{i}]: ours {x} vs candle {y}"
        );
    }
}

#[test]
fn convolution_matches_candle_forward_and_both_gradients() {
    let mut rng = SplitMix64::new(7);
    let dev = Device::Cpu;
    // (n, h, w, cin, cout, k, stride): candle's conv2d backward needs the
    // same parity in height and width at stride 2.
    let cases = [
        (1, 7, 7, 3, 5, 3, 1),
        (2, 9, 13, 4, 6, 3, 2),
        (3, 8, 6, 5, 4, 1, 1),
        (2, 10, 6, 6, 3, 1, 2),
        (1, 5, 5, 16, 16, 3, 1),
        (4, 11, 11, 2, 7, 3, 2),
    ];
    for _ in 0..3 {
        for &(n, h, w, cin, cout, k, stride) in &cases {
            let g = ConvGeom {
                n,
                h,
                w,
                cin,
                cout,
                k,
                stride,
                pad: k / 2,
            };
            let x = Var::from_vec(random(n * cin * h * w, &mut rng), (n, cin, h, w), &dev).unwrap();
            let wt = Var::from_vec(
                random(cout * cin * k * k, &mut rng),
                (cout, cin, k, k),
                &dev,
            )
            .unwrap();
            let y = x
                .as_tensor()
                .conv2d(wt.as_tensor(), k / 2, stride, 1, 1)
                .unwrap();
            let dy = Tensor::from_vec(random(y.elem_count(), &mut rng), y.dims(), &dev).unwrap();
            let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();

            let xs = to_nhwc(x.as_tensor());
            let pm = tsimcne_ops::weight_to_patch_major(
                &wt.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                &g,
            );
            let mut out = vec![0.0; g.output_len()];
            tsimcne_ops::conv_forward(&xs, &g, &pm, &mut out);
            close("forward", &out, &to_nhwc(&y), 1e-5);

            let dys = to_nhwc(&dy);
            let mut dx = vec![0.0; g.input_len()];
            tsimcne_ops::conv_backward_data(&dys, &g, &pm, &mut dx, false);
            close(
                "input gradient",
                &dx,
                &to_nhwc(grads.get(&x).unwrap()),
                1e-5,
            );

            let dw = tsimcne_ops::conv_backward_weight(&xs, &dys, &g);
            let want: Vec<f32> = grads
                .get(&wt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            close("weight gradient", &dw, &want, 1e-5);
        }
    }
}

#[test]
fn batch_norm_with_residual_and_relu_matches_candle() {
    let mut rng = SplitMix64::new(11);
    let dev = Device::Cpu;
    for &(n, c, h, w, residual, relu) in &[
        (1, 3, 5, 7, false, true),
        (4, 6, 3, 3, true, true),
        (2, 5, 4, 2, false, false),
        (8, 16, 1, 1, true, true),
    ] {
        let x = Var::from_vec(random(n * c * h * w, &mut rng), (n, c, h, w), &dev).unwrap();
        let r = Var::from_vec(random(n * c * h * w, &mut rng), (n, c, h, w), &dev).unwrap();
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bn =
            candle_nn::batch_norm(c, candle_nn::BatchNormConfig::default(), vb.clone()).unwrap();
        let gamma = Var::from_vec(random(c, &mut rng), c, &dev).unwrap();
        let beta = Var::from_vec(random(c, &mut rng), c, &dev).unwrap();
        // candle: normalise (batch statistics), affine, + r, ReLU.
        let norm = bn.forward_t(x.as_tensor(), true).unwrap();
        let mut y = norm
            .broadcast_mul(&gamma.as_tensor().reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&beta.as_tensor().reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        if residual {
            y = (y + r.as_tensor()).unwrap();
        }
        if relu {
            y = y.relu().unwrap();
        }
        let dy = Tensor::from_vec(random(y.elem_count(), &mut rng), y.dims(), &dev).unwrap();
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();

        let xs = to_nhwc(x.as_tensor());
        let rs = to_nhwc(r.as_tensor());
        let gm: Vec<f32> = gamma.as_tensor().to_vec1().unwrap();
        let bt: Vec<f32> = beta.as_tensor().to_vec1().unwrap();
        let mut out = vec![0.0; xs.len()];
        let stats = tsimcne_ops::bn_train_forward(
            &xs,
            c,
            &gm,
            &bt,
            1e-5,
            residual.then_some(&rs[..]),
            relu,
            &mut out,
        );
        close("output", &out, &to_nhwc(&y), 1e-5);
        // The statistics against candle's: the mean, and the running
        // variance update's unbiased variance.
        let mean: Vec<f32> = x
            .as_tensor()
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        close("mean", &stats.mean, &mean, 1e-5);
        let var: Vec<f32> = x
            .as_tensor()
            .transpose(0, 1)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .broadcast_sub(&Tensor::from_vec(mean, (c, 1), &dev).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap();
        close("variance", &stats.var, &var, 1e-5);

        let dys = to_nhwc(&dy);
        let mut dx = vec![0.0; xs.len()];
        let mut dr = vec![0.0; xs.len()];
        let p = tsimcne_ops::bn_train_backward(
            &xs,
            relu.then_some(&out[..]),
            &dys,
            c,
            &gm,
            &stats,
            1e-5,
            &mut dx,
            Some(&mut dr),
        );
        close(
            "input gradient",
            &dx,
            &to_nhwc(grads.get(&x).unwrap()),
            1e-4,
        );
        close(
            "gamma gradient",
            &p.gamma,
            &grads.get(&gamma).unwrap().to_vec1::<f32>().unwrap(),
            1e-4,
        );
        close(
            "beta gradient",
            &p.beta,
            &grads.get(&beta).unwrap().to_vec1::<f32>().unwrap(),
            1e-4,
        );
        if residual {
            close(
                "residual gradient",
                &dr,
                &to_nhwc(grads.get(&r).unwrap()),
                1e-5,
            );
        }
    }
}

#[test]
fn eval_batch_norm_matches_candle() {
    let mut rng = SplitMix64::new(13);
    let dev = Device::Cpu;
    let (n, c, h, w) = (3, 4, 5, 3);
    let x = Tensor::from_vec(random(n * c * h * w, &mut rng), (n, c, h, w), &dev).unwrap();
    let rm = random(c, &mut rng);
    let rv: Vec<f32> = random(c, &mut rng).iter().map(|v| v.abs() + 0.5).collect();
    let gm = random(c, &mut rng);
    let bt = random(c, &mut rng);
    let t = |v: &Vec<f32>| Tensor::from_vec(v.clone(), c, &dev).unwrap();
    let bn = candle_nn::BatchNorm::new(c, t(&rm), t(&rv), t(&gm), t(&bt), 1e-5).unwrap();
    let y = bn.forward_t(&x, false).unwrap().relu().unwrap();
    let xs = to_nhwc(&x);
    let mut out = vec![0.0; xs.len()];
    let running = tsimcne_ops::BnStats { mean: rm, var: rv };
    tsimcne_ops::bn_eval_forward(&xs, c, &gm, &bt, &running, 1e-5, None, true, &mut out);
    close("eval output", &out, &to_nhwc(&y), 1e-5);
}

#[test]
fn global_average_pool_and_its_gradient() {
    let x: Vec<f32> = (0..2 * 6 * 3).map(|v| v as f32).collect(); // [2, 6 px, 3 ch]
    let y = tsimcne_ops::global_avg_pool(&x, 2, 3);
    assert_eq!(y, vec![7.5, 8.5, 9.5, 25.5, 26.5, 27.5]);
    let dx = tsimcne_ops::global_avg_pool_backward(&[6.0, 12.0, 18.0, 0.0, 6.0, 0.0], 2, 3, 6);
    assert_eq!(&dx[..3], &[1.0, 2.0, 3.0]);
    assert_eq!(&dx[33..], &[0.0, 1.0, 0.0]);
}
