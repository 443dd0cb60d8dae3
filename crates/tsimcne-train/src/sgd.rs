//! SGD with momentum and weight decay, PyTorch semantics, plus gradient
//! clipping by value. candle-nn's SGD has neither momentum nor state that can
//! be saved; the momentum buffers here are part of every checkpoint.
//!
//! One step, for each parameter `w` with gradient `g`:
//! `g ← clamp(g, −clip, clip)`; `g ← g + wd·w`; `buf ← μ·buf + g`;
//! `w ← w − lr·buf` (the first step starts from `buf = 0`, which equals
//! PyTorch's `buf = g`).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var, backprop::GradStore};

/// SGD settings; the defaults are the recipe's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
    /// Clip every gradient element to ±this before the step; `None` for no clipping.
    pub clip_value: Option<f64>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_value: Some(4.0),
        }
    }
}

/// How [`Sgd::step`] updates parameters on a GPU (on the CPU it is always
/// one loop per parameter). Both give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuStep {
    /// candle's tensor ops: eight launches and four temporaries a
    /// parameter; the form that passed the GPU tests.
    #[default]
    TensorOps,
    /// One kernel launch for all the parameters, in place
    /// (`tsimcne_model::cuda::sgd_step`, the `cuda` build). Checked on CPU
    /// threads against the CPU loop (tsimcne-model's tests/cuda_host.rs),
    /// not yet on a GPU.
    Fused,
}

/// The optimiser: the parameters it updates and their momentum buffers.
///
/// **Invariant:** only the parameters given to [`Sgd::new`] are ever
/// changed; anything else (frozen layers, BatchNorm statistics) is untouched.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<(String, Var)>,
    /// Momentum buffers by parameter name; absent until the first step.
    buffers: BTreeMap<String, Tensor>,
    pub config: SgdConfig,
    gpu_step: GpuStep,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Self {
        Self {
            params,
            buffers: BTreeMap::new(),
            config,
            gpu_step: GpuStep::default(),
        }
    }

    /// Chooses how parameters on a GPU are updated; the CPU ignores it.
    pub fn set_gpu_step(&mut self, step: GpuStep) {
        self.gpu_step = step;
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The momentum buffers, for the checkpoint.
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Restores momentum buffers from a checkpoint. Every buffer must belong
    /// to a parameter of this optimiser and have its shape.
    pub fn set_buffers(&mut self, buffers: BTreeMap<String, Tensor>) -> Result<()> {
        for (name, b) in &buffers {
            let Some((_, v)) = self.params.iter().find(|(n, _)| n == name) else {
                candle_core::bail!("momentum buffer for unknown parameter {name}");
            };
            if b.dims() != v.dims() {
                candle_core::bail!(
                    "momentum buffer {name} has shape {:?}, the parameter {:?}",
                    b.dims(),
                    v.dims()
                );
            }
        }
        self.buffers = buffers;
        Ok(())
    }

    /// One step at learning rate `lr` with the gradients in `grads`.
    /// Parameters without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = self.config;
        // The parameters of the fused GPU step, all in one launch.
        #[cfg(feature = "cuda")]
        let mut fused: Vec<(&String, &Var, &Tensor)> = Vec::new();
        for (name, var) in &self.params {
            let Some(g) = grads.get(var) else { continue };
            if var.device().is_cpu() {
                step_cpu(&mut self.buffers, c, name, var, g, lr)?;
                continue;
            }
            #[cfg(feature = "cuda")]
            if self.gpu_step == GpuStep::Fused && var.device().is_cuda() {
                fused.push((name, var, g));
                continue;
            }
            let mut g = g.detach();
            if let Some(clip) = c.clip_value {
                g = g.clamp(-clip, clip)?;
            }
            let w = var.as_tensor().detach();
            if c.weight_decay != 0.0 {
                g = (g + (&w * c.weight_decay)?)?;
            }
            let update = if c.momentum != 0.0 {
                let buf = match self.buffers.get(name) {
                    Some(b) => ((b * c.momentum)? + g)?,
                    None => g,
                };
                self.buffers.insert(name.clone(), buf.clone());
                buf
            } else {
                g
            };
            var.set(&(w - (update * lr)?)?)?;
        }
        #[cfg(feature = "cuda")]
        step_fused(&mut self.buffers, c, &fused, lr)?;
        Ok(())
    }
}

/// The update in one GPU kernel, in place; a first step's buffer starts as
/// zeros that the kernel overwrites with the gradient.
#[cfg(feature = "cuda")]
fn step_fused(
    buffers: &mut BTreeMap<String, Tensor>,
    c: SgdConfig,
    params: &[(&String, &Var, &Tensor)],
    lr: f64,
) -> Result<()> {
    use tsimcne_model::cuda::{Momentum, SgdParam, SgdStep, sgd_step};
    let step = SgdStep {
        lr: lr as f32,
        momentum: c.momentum as f32,
        weight_decay: c.weight_decay as f32,
        clip: c.clip_value.map(|v| v as f32),
    };
    // Each parameter's buffer (contiguous, as the kernel writes it in
    // place) and whether it is new, with momentum.
    let bufs: Vec<Option<(Tensor, bool)>> = params
        .iter()
        .map(|&(name, var, _)| {
            if c.momentum == 0.0 {
                return Ok(None);
            }
            let buf = match buffers.get(name) {
                Some(b) if b.is_contiguous() => b.clone(),
                Some(b) => b.contiguous()?.copy()?,
                None => var.as_tensor().zeros_like()?,
            };
            Ok(Some((buf, !buffers.contains_key(name))))
        })
        .collect::<Result<_>>()?;
    let list: Vec<SgdParam<'_>> = params
        .iter()
        .zip(&bufs)
        .map(|(&(_, w, g), b)| SgdParam {
            w,
            g,
            momentum: b
                .as_ref()
                .map(|(buf, first)| Momentum { buf, first: *first }),
        })
        .collect();
    sgd_step(&list, step).map_err(candle_core::Error::wrap)?;
    for (&(name, _, _), b) in params.iter().zip(bufs) {
        if let Some((buf, _)) = b {
            buffers.insert(name.clone(), buf);
        }
    }
    Ok(())
}

/// The same update as the tensor-op path (same f32 operations in the same
/// order, so the same bits) as one loop over each parameter: candle's
/// element-wise ops would run five passes, each through its thread pool.
fn step_cpu(
    buffers: &mut BTreeMap<String, Tensor>,
    c: SgdConfig,
    name: &str,
    var: &Var,
    g: &Tensor,
    lr: f64,
) -> Result<()> {
    let shape = var.shape().clone();
    let g = g.flatten_all()?.to_vec1::<f32>()?;
    let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    if g.len() != w.len() {
        candle_core::bail!(
            "gradient of {name} has {} elements, the parameter {}",
            g.len(),
            w.len()
        );
    }
    let mut buf = match buffers.get(name) {
        Some(b) if c.momentum != 0.0 => Some(b.flatten_all()?.to_vec1::<f32>()?),
        _ => None,
    };
    let clip = c.clip_value.map(|v| v as f32);
    let (wd, mu, lr) = (c.weight_decay as f32, c.momentum as f32, lr as f32);
    let first = buf.is_none();
    let b = buf.get_or_insert_with(|| vec![0.0; w.len()]);
    for ((w, &g), b) in w.iter_mut().zip(&g).zip(b.iter_mut()) {
        let mut g = g;
        if let Some(clip) = clip {
            g = g.max(-clip).min(clip);
        }
        if c.weight_decay != 0.0 {
            g += *w * wd;
        }
        let update = if c.momentum != 0.0 {
            *b = if first { g } else { *b * mu + g };
            *b
        } else {
            g
        };
        *w -= update * lr;
    }
    let device = var.device().clone();
    var.set(&Tensor::from_vec(w, shape.clone(), &device)?)?;
    if c.momentum != 0.0
        && let Some(b) = buf
    {
        buffers.insert(name.to_string(), Tensor::from_vec(b, shape, &device)?);
    }
    Ok(())
}
