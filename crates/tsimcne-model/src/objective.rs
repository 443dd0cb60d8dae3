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
        let name = |layer: usize, what: &str| format!("{HEAD}.{layer}.{what}");
        let names = [
            name(HEAD_HIDDEN, "weight"),
            name(HEAD_HIDDEN, "bias"),
            name(HEAD_OUT, "weight"),
            name(HEAD_OUT, "bias"),
        ];
        let read = |n: &str| -> Result<Vec<f32>> {
            let v = vars
                .get(n)
                .ok_or_else(|| ModelError::Invalid(format!("tensor {n} is missing")))?;
            Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
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
