//! What a training step minimises, and the projection head on host rows.
//!
//! An [`Objective`] is the loss of the head's outputs as a candle graph (any
//! device, autograd); one that also computes its value and gradient on host
//! rows ([`HostObjective`]) lets the CPU's fast path run the head and the
//! loss without a graph: the head through our GEMM kernels
//! ([`tsimcne_ops::linear`]), the loss in one pass. On the demo's frozen
//! fine-tuning step, candle's graph for this small MLP and the loss took
//! about as long as the rest of the step (`bench_train frozen`).

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use tsimcne_format::model_keys::{HEAD, HEAD_HIDDEN, HEAD_OUT, ResNetArch};
use tsimcne_ops::{LinearGeom, linear_backward_data, linear_backward_params, linear_forward};

use crate::error::{ModelError, Result};
use crate::model::Backprop;

/// The loss of a batch's head outputs.
pub trait Objective {
    /// The loss of `z` `[rows, out_dim]` as a candle graph (a scalar).
    fn loss(&self, z: &Tensor) -> candle_core::Result<Tensor>;

    /// The same loss on host rows, where it is implemented.
    fn on_host(&self) -> Option<&dyn HostObjective> {
        None
    }

    /// The same loss as one our GPU kernels compute, where it is one
    /// ([`crate::GpuLoss::Kernels`]).
    fn kernel_loss(&self) -> Option<KernelLoss> {
        None
    }
}

/// A loss that our GPU kernels compute with its gradient, without a graph
/// (`crate::cuda::info_nce_cauchy` in the `cuda` build).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelLoss {
    /// InfoNCE with the Cauchy similarity `−log(1 + ‖u − v‖²)` of the views
    /// `[2N, D]` (view i's partner i ± N), of the views centred and scaled
    /// to a root mean square coordinate of `map_scale` first when given.
    InfoNceCauchy { map_scale: Option<f64> },
}

/// Any closure from outputs to a scalar loss is an objective (graph only).
impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> Objective for F {
    fn loss(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self(z)
    }
}

/// An objective's value and gradient on host rows.
pub trait HostObjective {
    /// The loss of `z` `[rows, dim]` (row-major) and its gradient by `z`:
    /// the same function as [`Objective::loss`], up to float rounding.
    fn loss_and_grad(&self, z: &[f32], rows: usize, dim: usize) -> (f32, Vec<f32>);
}

/// The checkpoint names of the head's four parameters: the hidden layer's
/// weight and bias, the output layer's weight and bias.
fn head_names() -> [String; 4] {
    let name = |layer: usize, what: &str| format!("{HEAD}.{layer}.{what}");
    [
        name(HEAD_HIDDEN, "weight"),
        name(HEAD_HIDDEN, "bias"),
        name(HEAD_OUT, "weight"),
        name(HEAD_OUT, "bias"),
    ]
}

/// The variable `name` of `vars`' tensor, or a one-line error.
fn head_var<'a>(vars: &'a HashMap<String, Var>, name: &str) -> Result<&'a Tensor> {
    vars.get(name)
        .map(Var::as_tensor)
        .ok_or_else(|| ModelError::Invalid(format!("tensor {name} is missing")))
}

/// The head's parameters as tensors on the model's device (no copies) and
/// their names: its forward and backward pass written out in tensor ops,
/// without candle's autograd, around a loss that gives its own gradient
/// (the GPU's loss kernels, [`crate::GpuLoss::Kernels`]): about fifteen ops
/// instead of the graph's forward and backward.
// Used by the GPU path only (the `cuda` build); tested on the CPU.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct OpsHead {
    names: [String; 4],
    w1: Tensor, // [hidden, feature]
    b1: Tensor, // [hidden]
    w2: Tensor, // [out_dim, hidden]
    b2: Tensor, // [out_dim]
}

/// The gradients of an [`OpsHead`] pass: `(name, gradient)` of the
/// parameters it trains, and the gradient by its input (a full pass only).
// Used by the GPU path only (the `cuda` build); tested on the CPU.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct OpsHeadGrads {
    pub params: Vec<(String, Tensor)>,
    pub input: Option<Tensor>,
}

// Used by the GPU path only (the `cuda` build); tested on the CPU.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl OpsHead {
    pub(crate) fn read(vars: &HashMap<String, Var>) -> Result<Self> {
        let names = head_names();
        // Detached: the same storage, but the ops build no autograd graph.
        Ok(Self {
            w1: head_var(vars, &names[0])?.detach(),
            b1: head_var(vars, &names[1])?.detach(),
            w2: head_var(vars, &names[2])?.detach(),
            b2: head_var(vars, &names[3])?.detach(),
            names,
        })
    }

    /// The loss of the head's outputs for features `f` `[rows, feature]`,
    /// `loss(z)` giving the loss `[]` and its gradient by `z` `[rows,
    /// out_dim]`, and the gradients: of all four parameters and of `f` with
    /// [`Backprop::Full`], of the output layer's two only with
    /// [`Backprop::OutputOnly`] (the project stage's step).
    pub(crate) fn loss_and_grads(
        &self,
        f: &Tensor,
        loss: impl FnOnce(&Tensor) -> Result<(Tensor, Tensor)>,
        backprop: Backprop,
    ) -> Result<(Tensor, OpsHeadGrads)> {
        let h = f.matmul(&self.w1.t()?)?.broadcast_add(&self.b1)?.relu()?; // [rows, hidden]
        let z = h.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)?; // [rows, out_dim]
        let (l, dz) = loss(&z)?;
        let [n1, n2, n3, n4] = self.names.clone();
        let mut params = vec![
            (n3, dz.t()?.matmul(&h)?), // [out_dim, hidden]
            (n4, dz.sum(0)?),          // [out_dim]
        ];
        let input = match backprop {
            Backprop::OutputOnly => None,
            Backprop::Full => {
                // Through the ReLU: no gradient where its output is 0
                // (sign(h) is 1 where h > 0, else 0: one op, no scalar upload).
                let dh = dz.matmul(&self.w2)?.mul(&h.sign()?)?; // [rows, hidden]
                params.insert(0, (n1, dh.t()?.matmul(f)?)); // [hidden, feature]
                params.insert(1, (n2, dh.sum(0)?)); // [hidden]
                Some(dh.matmul(&self.w1)?) // [rows, feature]
            }
        };
        Ok((l, OpsHeadGrads { params, input }))
    }
}

/// The head's parameters (PyTorch layout) and their names, read once per step.
pub(crate) struct HostHead {
    names: [String; 4],
    w1: Vec<f32>, // [hidden, feature]
    b1: Vec<f32>, // [hidden]
    w2: Vec<f32>, // [out_dim, hidden]
    b2: Vec<f32>, // [out_dim]
    feature: usize,
    hidden: usize,
    out: usize,
}

/// A parameter's gradient on host rows: its name, values and shape.
pub(crate) type HostGrad = (String, Vec<f32>, Vec<usize>);

/// The gradients of a host head pass: `(name, gradient)` of its four
/// parameters, and the gradient by its input `[rows, feature]`.
pub(crate) struct HostHeadGrads {
    pub params: Vec<HostGrad>,
    pub input: Vec<f32>,
}

impl HostHead {
    pub(crate) fn read(arch: &ResNetArch, vars: &HashMap<String, Var>) -> Result<Self> {
        let names = head_names();
        let read = |n: &str| -> Result<Vec<f32>> {
            Ok(head_var(vars, n)?.flatten_all()?.to_vec1::<f32>()?)
        };
        Ok(Self {
            w1: read(&names[0])?,
            b1: read(&names[1])?,
            w2: read(&names[2])?,
            b2: read(&names[3])?,
            names,
            feature: arch.feature_dim(),
            hidden: arch.head_hidden,
            out: arch.out_dim,
        })
    }

    fn geoms(&self, rows: usize) -> (LinearGeom, LinearGeom) {
        let g1 = LinearGeom {
            n: rows,
            inp: self.feature,
            out: self.hidden,
        };
        let g2 = LinearGeom {
            n: rows,
            inp: self.hidden,
            out: self.out,
        };
        (g1, g2)
    }

    /// The head's forward pass for features `f` `[rows, feature]`: the
    /// hidden layer after its ReLU `[rows, hidden]` and the outputs
    /// `[rows, out_dim]`.
    fn forward(&self, f: &[f32], rows: usize) -> (Vec<f32>, Vec<f32>) {
        let (g1, g2) = self.geoms(rows);
        let mut h = vec![0f32; rows * self.hidden]; // [rows, hidden]
        linear_forward(f, g1, &self.w1, &self.b1, &mut h);
        for v in &mut h {
            *v = v.max(0.0);
        }
        let mut z = vec![0f32; rows * self.out]; // [rows, out_dim]
        linear_forward(&h, g2, &self.w2, &self.b2, &mut z);
        (h, z)
    }

    /// The loss of the head's outputs for features `f` `[rows, feature]`,
    /// and the gradients of the output layer's two parameters only: the
    /// step that trains a fresh output layer alone (`project`).
    pub(crate) fn output_loss_and_grads(
        &self,
        f: &[f32],
        rows: usize,
        objective: &dyn HostObjective,
    ) -> (f32, Vec<HostGrad>) {
        let (_, g2) = self.geoms(rows);
        let (h, z) = self.forward(f, rows);
        let (loss, dz) = objective.loss_and_grad(&z, rows, self.out);
        let (dw2, db2) = linear_backward_params(&h, &dz, g2);
        let [_, _, n3, n4] = self.names.clone();
        let params = vec![
            (n3, dw2, vec![self.out, self.hidden]),
            (n4, db2, vec![self.out]),
        ];
        (loss, params)
    }

    /// The loss of the head's outputs for features `f` `[rows, feature]`,
    /// and the gradients of the head's parameters and of `f`.
    pub(crate) fn loss_and_grads(
        &self,
        f: &[f32],
        rows: usize,
        objective: &dyn HostObjective,
    ) -> (f32, HostHeadGrads) {
        let (g1, g2) = self.geoms(rows);
        let (h, z) = self.forward(f, rows);
        let (loss, dz) = objective.loss_and_grad(&z, rows, self.out);
        let (dw2, db2) = linear_backward_params(&h, &dz, g2);
        let mut dh = vec![0f32; rows * self.hidden];
        linear_backward_data(&dz, g2, &self.w2, &mut dh);
        // Through the ReLU: no gradient where its output is 0.
        for (d, &v) in dh.iter_mut().zip(&h) {
            if v <= 0.0 {
                *d = 0.0;
            }
        }
        let (dw1, db1) = linear_backward_params(f, &dh, g1);
        let mut df = vec![0f32; rows * self.feature];
        linear_backward_data(&dh, g1, &self.w1, &mut df);
        let [n1, n2, n3, n4] = self.names.clone();
        let params = vec![
            (n1, dw1, vec![self.hidden, self.feature]),
            (n2, db1, vec![self.hidden]),
            (n3, dw2, vec![self.out, self.hidden]),
            (n4, db2, vec![self.out]),
        ];
        (loss, HostHeadGrads { params, input: df })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module};

    use super::*;
    use crate::Model;

    /// The written-out head pass gives candle's autograd of the same head
    /// and loss (here ½ Σ z², whose gradient is z), both passes.
    #[test]
    fn the_ops_head_gives_the_autograd_gradients() {
        let arch = crate::preset("tiny", 3, 2).unwrap();
        let model = Model::new(&arch, 4, &Device::Cpu).unwrap();
        let vars = model.vars();
        let rows = 10;
        let values: Vec<f32> = (0..rows * arch.feature_dim())
            .map(|k| ((k * 37 % 101) as f32 / 50.0 - 1.0) * 3.0)
            .collect();
        let f = Var::from_vec(values, (rows, arch.feature_dim()), &Device::Cpu).unwrap();
        let half_square = |z: &Tensor| -> Result<(Tensor, Tensor)> {
            Ok(((z.sqr()?.sum_all()? * 0.5)?, z.clone()))
        };
        let z = model.net.head.forward(f.as_tensor()).unwrap();
        let graph = half_square(&z).unwrap().0;
        let autograd = graph.backward().unwrap();
        let head = OpsHead::read(&vars).unwrap();
        for backprop in [Backprop::Full, Backprop::OutputOnly] {
            let (loss, g) = head
                .loss_and_grads(f.as_tensor(), half_square, backprop)
                .unwrap();
            let close = |what: &str, a: &Tensor, b: &Tensor| {
                let (a, b) = (
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert_eq!(a.len(), b.len(), "{what}");
                let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * scale,
                        "{what} {backprop:?}: {x} vs {y}"
                    );
                }
            };
            close("loss", &loss, &graph);
            let want = match backprop {
                Backprop::Full => 4,
                Backprop::OutputOnly => 2,
            };
            assert_eq!(g.params.len(), want, "{backprop:?}");
            for (name, grad) in &g.params {
                let var = &vars[name];
                assert_eq!(grad.dims(), var.dims(), "{name}");
                close(name, grad, autograd.get(var.as_tensor()).unwrap());
            }
            match (backprop, &g.input) {
                (Backprop::Full, Some(df)) => {
                    close("input", df, autograd.get(f.as_tensor()).unwrap())
                }
                (Backprop::OutputOnly, None) => {}
                _ => panic!("{backprop:?}: input gradient {:?}", g.input.is_some()),
            }
        }
    }
}
