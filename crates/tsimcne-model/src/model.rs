//! A model with its parameters: seeded creation, safetensors load and save
//! with the reference names, and the list of trainable variables.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use tsimcne_format::model_keys::{
    BACKBONE, Dtype, HEAD, HEAD_OUT, ResNetArch, TensorSpec, tensor_specs,
};

#[cfg(feature = "cuda")]
use crate::cuda::CudaBackbone;
use crate::error::{ModelError, Result};
use crate::fast::{Acts, FastBackbone, Pass};
use crate::init::initial_values;
use crate::objective::{HostHead, HostHeadGrads, HostObjective, Objective};
#[cfg(feature = "cuda")]
use crate::objective::{KernelLoss, OpsHead};
use crate::resnet::Net;

/// The network, its variables, and the BatchNorm step counter.
///
/// **Invariant:** `varmap` holds exactly the F32 tensors of
/// `tensor_specs(arch)`, under those names; `num_batches_tracked` stands in
/// for PyTorch's per-BatchNorm I64 counters (all equal), which candle lacks.
pub struct Model {
    pub arch: ResNetArch,
    pub net: Net,
    varmap: VarMap,
    pub num_batches_tracked: i64,
    device: Device,
    fast: FastBackbone,
    #[cfg(feature = "cuda")]
    gpu: CudaBackbone,
    kernels: Kernels,
    gpu_loss: GpuLoss,
}

/// A recorded training pass of either fast backbone.
enum FastTape {
    Cpu(crate::fast::Tape),
    #[cfg(feature = "cuda")]
    Gpu(crate::cuda::Tape),
}

/// Which implementation runs the backbone in [`Model::infer`] and
/// [`Model::loss_and_grads`] (`--kernels`; a variant's first paragraph is
/// its `--help` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Kernels {
    /// Our kernels: on the CPU channels-last im2col + gemm convolutions, on a
    /// CUDA GPU cuDNN convolutions; fused BatchNorm and our own backward pass.
    ///
    /// On the CPU [`crate::fast`]; on a CUDA GPU `crate::cuda` (feature
    /// `cuda`), cuDNN convolutions with per-shape plans.
    Fast,
    /// candle's own ops and autograd (the reference; much slower on the CPU).
    ///
    /// [`crate::resnet`]: any device.
    Candle,
}

impl Kernels {
    /// Ours where they run (the CPU; a CUDA GPU in the `cuda` build),
    /// candle's elsewhere.
    pub fn default_for(device: &Device) -> Self {
        if Self::fast_runs_on(device) {
            Kernels::Fast
        } else {
            Kernels::Candle
        }
    }

    /// Whether [`Kernels::Fast`] runs on `device`.
    pub fn fast_runs_on(device: &Device) -> bool {
        device.is_cpu() || (crate::device::CUDA_BUILT && device.is_cuda())
    }
}

/// The arithmetic of the convolutions on a GPU ([`Kernels::Fast`] in the
/// `cuda` build); the CPU always computes exact f32.
/// (`--conv-math`; a variant's first paragraph is its `--help` line.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ConvMath {
    /// f32 multiply-adds: the CPU's results within float rounding.
    ///
    /// No tensor cores.
    #[default]
    Exact,
    /// TF32 tensor cores (PyTorch's default for convolutions): about twice
    /// as fast a step on an H200, products rounded to 10 mantissa bits.
    ///
    /// f32 sums; PyTorch's `torch.backends.cudnn.allow_tf32`.
    Tf32,
    /// bf16 activations and convolutions on tensor cores, f32 statistics
    /// and master weights (PyTorch's bf16 autocast); not yet run on a GPU.
    ///
    /// Products summed in f32; batch-norm statistics, features, gradients
    /// and master weights f32; each convolution's weights rounded to bf16
    /// once a step. Checked on CPU threads (tests/cuda_host.rs: the kernels
    /// give the f32 kernels' results rounded); on a GPU
    /// `tests/cuda_fast.rs` compares it with the CPU within bf16's
    /// precision.
    Bf16,
}

/// How the GPU backbone chooses each convolution shape's cuDNN algorithms
/// (once per shape, for the life of the model; [`Kernels::Fast`] in the
/// `cuda` build; the CPU ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConvSearch {
    /// cuDNN's heuristics' ranking, without running anything: the same
    /// algorithms on every run, so the same bits.
    #[default]
    Heuristic,
    /// Each algorithm run and timed (cuDNN's `Find`, as PyTorch's
    /// `cudnn.benchmark`), the fastest deterministic one taken: the run is
    /// then deterministic, but timing noise may choose another algorithm
    /// (other last bits) on another run. Not yet run on a GPU.
    Timed,
}

/// How the loss and its gradient by the head's outputs are computed on a
/// GPU with [`Kernels::Fast`] (`--kernels candle` keeps candle's ops
/// throughout; the CPU ignores it). Both are the same function within
/// float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GpuLoss {
    /// The objective's candle graph ([`Objective::loss`]) and candle's
    /// autograd through it: the form that passed the GPU tests on an H200.
    #[default]
    Graph,
    /// Our loss kernels (`cuda::info_nce_cauchy`, in the `cuda` build)
    /// where the objective is one they compute
    /// ([`Objective::kernel_loss`]), else the graph: two launches (four
    /// with a map scale) instead of candle's graph (some twenty ops, each
    /// with its backward) and two uploads a step; and with our backbone the
    /// head's forward and backward written out in tensor ops
    /// (`objective::OpsHead`) instead of candle's autograd. Checked on CPU
    /// threads (tests/cuda_host.rs) and against autograd on the CPU, but not
    /// yet on a GPU.
    Kernels,
}

/// How the GPU backbone sums each channel's batch-norm statistics and
/// gradient terms over the batch ([`Kernels::Fast`] in the `cuda` build;
/// the CPU ignores it). Both are in f64 in an order fixed by the shape, so
/// both are deterministic on a given GPU; they differ in the last bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BnSums {
    /// One block of threads per channel: the form that passed the GPU tests
    /// on an H200. At most a few hundred blocks for a layer, which leaves
    /// most of a large GPU idle while the sums run.
    #[default]
    PerChannel,
    /// Each channel cut into [`BnSums::parts`] parts, one block each, whose
    /// sums are added in part order; and the batch-norm kernels' index
    /// arithmetic by multiply and shift ([`crate::FastDiv`]) instead of
    /// 64-bit division, for tensors under 2^31 elements (the same integers);
    /// and the running statistics updated in place by the launch that
    /// finishes the batch statistics (one launch a layer instead of two
    /// and two copies; the same bits).
    /// Checked on CPU threads (tests/cuda_host.rs) but not yet on a GPU.
    Split,
}

impl BnSums {
    /// Elements a part sums in [`BnSums::Split`]: 32 per thread.
    pub const PART_ELEMENTS: usize = 8192;
    /// The most parts a channel is cut into.
    pub const MAX_PARTS: usize = 1024;

    /// The parts a channel of `elements` values (batch × height × width) is
    /// summed in: a function of the shape alone, never of the GPU, so that
    /// the order of the sums is fixed.
    pub fn parts(self, elements: usize) -> usize {
        match self {
            BnSums::PerChannel => 1,
            BnSums::Split => elements
                .div_ceil(Self::PART_ELEMENTS)
                .clamp(1, Self::MAX_PARTS),
        }
    }
}

/// How the GPU backbone lays out its activations in memory
/// ([`Kernels::Fast`] in the `cuda` build; the CPU path is always
/// channels-last and ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemoryFormat {
    /// `[n, c, h, w]`, as candle and PyTorch by default: the form that
    /// passed the GPU tests on an H200.
    #[default]
    Nchw,
    /// `[n, h, w, c]` (PyTorch's `channels_last`), the layout of cuDNN's
    /// tensor-core convolutions, with the weights as `[cout, kh, kw, cin]`
    /// for each pass (the checkpoint keeps `[cout, cin, kh, kw]`). Batch
    /// norm then sums tiles of [`MemoryFormat::TILE`] channels over
    /// [`MemoryFormat::parts`] parts of the rows, whatever [`BnSums`] says.
    /// Checked on CPU threads (tests/cuda_host.rs) but not yet on a GPU.
    Nhwc,
}

impl MemoryFormat {
    /// The channels one block of a channels-last batch-norm sum covers (a
    /// warp's 32 threads, so that its reads of a row are contiguous).
    pub const TILE: usize = 32;

    /// The parts the `rows` (batch × height × width) of a channels-last
    /// tensor of `c` channels are summed in: about
    /// [`BnSums::PART_ELEMENTS`] values a block, a function of the shape
    /// alone, so that the order of the sums is fixed.
    pub fn parts(rows: usize, c: usize) -> usize {
        (rows * c.min(Self::TILE))
            .div_ceil(BnSums::PART_ELEMENTS)
            .clamp(1, BnSums::MAX_PARTS)
            .min(rows.max(1))
    }
}

/// Which gradients [`Model::loss_and_grads`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backprop {
    /// Every parameter.
    Full,
    /// The output layer only (the project stage): the graph is cut below it,
    /// so the backbone's backward pass is skipped. Same values.
    OutputOnly,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .field("num_batches_tracked", &self.num_batches_tracked)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A freshly initialised model (see [`crate::init`]).
    pub fn new(arch: &ResNetArch, seed: u64, device: &Device) -> Result<Self> {
        let specs = tensor_specs(arch);
        let mut tensors = HashMap::new();
        for (name, shape, values) in initial_values(&specs, seed) {
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Self::from_tensors(arch, tensors, 0, device)
    }

    /// Builds the model around the given F32 tensors (checked by the caller).
    fn from_tensors(
        arch: &ResNetArch,
        tensors: HashMap<String, Tensor>,
        nbt: i64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Invalid("poisoned variable map".into()))?;
            for (name, t) in tensors {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = Net::new(arch, vb)?;
        let model = Self {
            arch: arch.clone(),
            net,
            varmap,
            num_batches_tracked: nbt,
            device: device.clone(),
            fast: FastBackbone::new(arch),
            #[cfg(feature = "cuda")]
            gpu: CudaBackbone::new(arch, ConvMath::default()),
            kernels: Kernels::default_for(device),
            gpu_loss: GpuLoss::default(),
        };
        let expected = tensor_specs(arch)
            .iter()
            .filter(|s| s.dtype == Dtype::F32)
            .count();
        if model.vars().len() != expected {
            return Err(ModelError::Invalid(
                "the network asked for tensors outside the key convention".into(),
            ));
        }
        Ok(model)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every F32 variable by name (parameters and BatchNorm running stats).
    pub fn vars(&self) -> HashMap<String, Var> {
        self.varmap
            .data()
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// The trainable parameters in state_dict order, optionally only those
    /// whose name starts with one of `prefixes` (for the project stage).
    pub fn trainable(&self, prefixes: Option<&[&str]>) -> Vec<(String, Var)> {
        let vars = self.vars();
        tensor_specs(&self.arch)
            .into_iter()
            .filter(|s| s.trainable)
            .filter(|s| prefixes.is_none_or(|p| p.iter().any(|p| s.name.starts_with(p))))
            .filter_map(|s| vars.get(&s.name).map(|v| (s.name, v.clone())))
            .collect()
    }

    /// Forward pass; in training mode BatchNorm uses batch statistics and
    /// updates its running statistics, so the counter advances.
    pub fn forward_t(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.num_batches_tracked += 1;
        }
        Ok(self.net.forward_t(x, train)?)
    }

    /// `forward_t` for training the output layer alone: gradients stop
    /// below it (see `Net::forward_output_only_t`).
    pub fn forward_output_only_t(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.num_batches_tracked += 1;
        }
        Ok(self.net.forward_output_only_t(x, train)?)
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Chooses the backbone implementation; the fast kernels need the CPU
    /// or, in a build with the `cuda` feature, a CUDA GPU.
    pub fn set_kernels(&mut self, kernels: Kernels) -> Result<()> {
        if kernels == Kernels::Fast && !Kernels::fast_runs_on(&self.device) {
            return Err(ModelError::Invalid(format!(
                "our kernels run on the CPU{}; on {:?} the backbone runs on candle's kernels",
                if crate::device::CUDA_BUILT {
                    " and CUDA GPUs"
                } else {
                    ""
                },
                self.device.location()
            )));
        }
        self.kernels = kernels;
        Ok(())
    }

    /// The arithmetic of the GPU backbone's convolutions (exact f32 by
    /// default); the CPU ignores it.
    pub fn set_conv_math(&mut self, math: ConvMath) {
        #[cfg(feature = "cuda")]
        self.gpu.set_math(math);
        #[cfg(not(feature = "cuda"))]
        let _ = math;
    }

    /// How the GPU backbone chooses its convolution algorithms
    /// ([`ConvSearch::Heuristic`] by default); the CPU ignores it.
    pub fn set_conv_search(&mut self, search: ConvSearch) {
        #[cfg(feature = "cuda")]
        self.gpu.set_search(search);
        #[cfg(not(feature = "cuda"))]
        let _ = search;
    }

    /// How the GPU backbone sums batch-norm statistics
    /// ([`BnSums::PerChannel`] by default); the CPU ignores it.
    pub fn set_bn_sums(&mut self, sums: BnSums) {
        #[cfg(feature = "cuda")]
        self.gpu.set_bn_sums(sums);
        #[cfg(not(feature = "cuda"))]
        let _ = sums;
    }

    /// How the loss is computed on a GPU ([`GpuLoss::Graph`] by default);
    /// the CPU ignores it.
    pub fn set_gpu_loss(&mut self, loss: GpuLoss) {
        self.gpu_loss = loss;
    }

    /// How the GPU backbone lays out its activations
    /// ([`MemoryFormat::Nchw`] by default); the CPU ignores it.
    pub fn set_memory_format(&mut self, format: MemoryFormat) {
        #[cfg(feature = "cuda")]
        self.gpu.set_format(format);
        #[cfg(not(feature = "cuda"))]
        let _ = format;
    }

    /// Starts timing the GPU backbone phase by phase (see
    /// [`CudaBackbone::start_profile`]); the model must be on a CUDA device.
    #[cfg(feature = "cuda")]
    pub fn start_gpu_profile(&self) -> Result<()> {
        self.gpu.start_profile(&self.device)
    }

    /// The GPU backbone's phases timed since [`Self::start_gpu_profile`].
    #[cfg(feature = "cuda")]
    pub fn take_gpu_profile(&self) -> Option<crate::cuda::Profile> {
        self.gpu.take_profile()
    }

    /// The fast backbone of the model's device.
    fn fast_forward(
        &self,
        vars: &HashMap<String, Var>,
        x: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Option<FastTape>)> {
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() {
            let (f, t) = self.gpu.forward(vars, x, pass)?;
            return Ok((f, t.map(FastTape::Gpu)));
        }
        let (f, t) = self.fast.forward(vars, x, pass)?;
        Ok((f, t.map(FastTape::Cpu)))
    }

    fn fast_backward(
        &self,
        vars: &HashMap<String, Var>,
        tape: FastTape,
        d_feat: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        match tape {
            FastTape::Cpu(t) => self.fast.backward(vars, t, d_feat),
            #[cfg(feature = "cuda")]
            FastTape::Gpu(t) => self.gpu.backward(vars, t, d_feat),
        }
    }

    /// Eval-mode backbone features and head outputs, `([batch, feature],
    /// [batch, out_dim])`, for embedding; no gradients.
    pub fn infer(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = match self.kernels {
            Kernels::Candle => self.net.backbone.forward_t(x, false)?,
            Kernels::Fast => self.fast_forward(&self.vars(), x, Pass::Eval)?.0,
        };
        let z = self.net.head.forward(&f)?;
        Ok((f.detach(), z.detach()))
    }

    /// One training forward and backward pass: the loss `loss(output)` of the
    /// batch `x` (BatchNorm in training mode, running statistics updated) and
    /// the gradients `backprop` asks for. The same values and gradients with
    /// either [`Kernels`], up to float rounding.
    pub fn loss_and_grads(
        &mut self,
        x: &Tensor,
        backprop: Backprop,
        objective: &impl Objective,
    ) -> Result<(Tensor, GradStore)> {
        self.num_batches_tracked += 1;
        match (self.kernels, backprop) {
            (Kernels::Candle, Backprop::Full) => {
                self.loss_backward(&self.net.forward_t(x, true)?, objective)
            }
            (Kernels::Candle, Backprop::OutputOnly) => {
                self.loss_backward(&self.net.forward_output_only_t(x, true)?, objective)
            }
            (Kernels::Fast, Backprop::OutputOnly) => {
                let vars = self.vars();
                let (f, _) = self.fast_forward(&vars, x, Pass::Train)?;
                if let (true, Some(host)) = (self.device.is_cpu(), objective.on_host()) {
                    // The head and the loss on host rows, no graph; only the
                    // output layer's gradients.
                    let (rows, _) = f.dims2()?;
                    let head = HostHead::read(&self.arch, &vars)?;
                    let f = f.flatten_all()?.to_vec1::<f32>()?;
                    let (loss, params) = head.output_loss_and_grads(&f, rows, host);
                    let mut grads = GradStore::default();
                    for (name, grad, shape) in params {
                        grads.insert(
                            vars[&name].as_tensor(),
                            Tensor::from_vec(grad, shape, &self.device)?,
                        );
                    }
                    return Ok((Tensor::new(loss, &self.device)?, grads));
                }
                #[cfg(feature = "cuda")]
                if let Some(map_scale) = self.kernel_loss_of(objective) {
                    let (loss, grads, _) =
                        self.kernel_head_pass(&vars, &f, map_scale, Backprop::OutputOnly)?;
                    return Ok((loss, grads));
                }
                // [batch, feature] → [batch, hidden], no gradient → [batch, out_dim]
                let h = self.net.head.hidden(&f)?.detach();
                self.loss_backward(&self.net.head.output(&h)?, objective)
            }
            (Kernels::Fast, Backprop::Full) => {
                let vars = self.vars();
                let (f, tape) = self.fast_forward(&vars, x, Pass::TrainRecord)?;
                self.head_and_backward(&vars, &f, tape, objective)
            }
        }
    }

    /// The head and the loss on candle's autograd from a leaf at the fast
    /// backbone's features `f`, whose gradient then goes down the recorded
    /// `tape` into the same `GradStore`.
    fn head_and_backward(
        &self,
        vars: &HashMap<String, Var>,
        f: &Tensor,
        tape: Option<FastTape>,
        objective: &impl Objective,
    ) -> Result<(Tensor, GradStore)> {
        let tape = tape.ok_or_else(|| ModelError::Invalid("no tape recorded".into()))?;
        if let (FastTape::Cpu(_), Some(host)) = (&tape, objective.on_host()) {
            // The head and the loss on host rows, no graph.
            let (rows, feature) = f.dims2()?;
            let (loss, g) = self.host_head_pass(vars, f, host)?;
            let mut grads = GradStore::default();
            for (name, grad, shape) in g.params {
                grads.insert(
                    vars[&name].as_tensor(),
                    Tensor::from_vec(grad, shape, &self.device)?,
                );
            }
            let d_feat = Tensor::from_vec(g.input, (rows, feature), &self.device)?;
            for (name, g) in self.fast_backward(vars, tape, &d_feat)? {
                grads.insert(vars[&name].as_tensor(), g);
            }
            return Ok((Tensor::new(loss, &self.device)?, grads));
        }
        #[cfg(feature = "cuda")]
        if let Some(map_scale) = self.kernel_loss_of(objective) {
            let (loss, mut grads, d_feat) =
                self.kernel_head_pass(vars, f, map_scale, Backprop::Full)?;
            let d_feat = d_feat.ok_or_else(|| {
                ModelError::Invalid("the head pass gave no gradient by the features".into())
            })?;
            for (name, g) in self.fast_backward(vars, tape, &d_feat)? {
                grads.insert(vars[&name].as_tensor(), g);
            }
            return Ok((loss, grads));
        }
        let f = Var::from_tensor(f)?;
        let (l, mut grads) =
            self.loss_backward(&self.net.head.forward(f.as_tensor())?, objective)?;
        let d_feat = grads.remove(f.as_tensor()).ok_or_else(|| {
            ModelError::Invalid("the loss does not depend on the features".into())
        })?;
        for (name, g) in self.fast_backward(vars, tape, &d_feat)? {
            grads.insert(vars[&name].as_tensor(), g);
        }
        Ok((l, grads))
    }

    /// The loss `[]` of the head's outputs `z` `[rows, out_dim]` (a node of
    /// candle's graph) and the gradients of all that `z` depends on: through
    /// the objective's graph, or where [`Model::kernel_loss_of`] says so by
    /// our loss kernels, whose gradient by `z`, `dz`, candle's autograd
    /// takes on down the graph as the gradient of `sum(z ⊙ dz)` (`dz` a
    /// constant; the GPU's frozen-prefix pass, on candle's backbone).
    fn loss_backward(&self, z: &Tensor, objective: &impl Objective) -> Result<(Tensor, GradStore)> {
        #[cfg(feature = "cuda")]
        if let Some(map_scale) = self.kernel_loss_of(objective) {
            let (loss, dz) = crate::cuda::info_nce_cauchy(&z.detach(), map_scale)?;
            let grads = z.mul(&dz)?.sum_all()?.backward()?;
            return Ok((loss, grads));
        }
        let l = objective.loss(z)?;
        let grads = l.backward()?;
        Ok((l, grads))
    }

    /// `Some(map_scale)` of the objective where our GPU loss kernels compute
    /// it on this model: on a GPU with [`Kernels::Fast`] and
    /// [`GpuLoss::Kernels`], for an objective they compute.
    #[cfg(feature = "cuda")]
    fn kernel_loss_of(&self, objective: &impl Objective) -> Option<Option<f64>> {
        match (
            self.gpu_loss,
            self.kernels,
            self.device.is_cuda(),
            objective.kernel_loss(),
        ) {
            (
                GpuLoss::Kernels,
                Kernels::Fast,
                true,
                Some(KernelLoss::InfoNceCauchy { map_scale }),
            ) => Some(map_scale),
            _ => None,
        }
    }

    /// The loss and gradients of the head and our GPU loss kernels
    /// (`map_scale` as [`Model::kernel_loss_of`] gives it) for backbone
    /// features `f` `[rows, feature]`, without candle's autograd
    /// ([`OpsHead`]): the parameters' gradients in a `GradStore`, and `f`'s
    /// with [`Backprop::Full`].
    #[cfg(feature = "cuda")]
    fn kernel_head_pass(
        &self,
        vars: &HashMap<String, Var>,
        f: &Tensor,
        map_scale: Option<f64>,
        backprop: Backprop,
    ) -> Result<(Tensor, GradStore, Option<Tensor>)> {
        let (loss, g) = OpsHead::read(vars)?.loss_and_grads(
            f,
            |z| crate::cuda::info_nce_cauchy(z, map_scale),
            backprop,
        )?;
        let mut grads = GradStore::default();
        for (name, grad) in g.params {
            grads.insert(vars[&name].as_tensor(), grad);
        }
        Ok((loss, grads, g.input))
    }

    /// The head's output for backbone features `f` `[n, feature]`:
    /// `[n, out_dim]` (differentiable; BatchNorm-free).
    pub fn head_forward(&self, f: &Tensor) -> Result<Tensor> {
        Ok(self.net.head.forward(f)?)
    }

    /// The objective's loss of the head's outputs for features `f`
    /// `[n, feature]` on host rows, with the gradient by `f` `[n, feature]`
    /// (the CPU's fast path from the features on); an error where the
    /// objective has no host form.
    pub fn head_loss_and_grads(
        &self,
        f: &Tensor,
        objective: &impl Objective,
    ) -> Result<(f32, Vec<f32>)> {
        let host = objective
            .on_host()
            .ok_or_else(|| ModelError::Invalid("the objective has no host form".into()))?;
        let (loss, g) = self.host_head_pass(&self.vars(), f, host)?;
        Ok((loss, g.input))
    }

    /// The head and `host`'s loss on host rows for features `f`
    /// `[rows, feature]`: the loss, the head's gradients and `f`'s.
    fn host_head_pass(
        &self,
        vars: &HashMap<String, Var>,
        f: &Tensor,
        host: &dyn HostObjective,
    ) -> Result<(f32, HostHeadGrads)> {
        let (rows, _) = f.dims2()?;
        let head = HostHead::read(&self.arch, vars)?;
        Ok(head.loss_and_grads(&f.flatten_all()?.to_vec1::<f32>()?, rows, host))
    }

    /// The fast CPU backbone, or a one-line error naming what `what` needs.
    fn fast_cpu(&self, what: &str) -> Result<&FastBackbone> {
        if self.kernels == Kernels::Fast && self.device.is_cpu() {
            Ok(&self.fast)
        } else {
            Err(ModelError::Invalid(format!(
                "{what} runs on our CPU kernels only (here: {:?} kernels on {:?})",
                self.kernels,
                self.device.location()
            )))
        }
    }

    /// The eval-mode output of the stem and the first `blocks` residual
    /// blocks for images `x` `[n, c, h, w]` (channels-last `[n, h', w', c']`):
    /// what a model whose first blocks are frozen feeds the rest.
    pub fn frozen_prefix(&self, x: &Tensor, blocks: usize) -> Result<Acts> {
        self.fast_cpu("a frozen prefix")?
            .prefix(&self.vars(), x, blocks)
    }

    /// [`Model::loss_and_grads`] for a model whose stem and first `blocks`
    /// residual blocks are frozen: they run in eval mode (running
    /// statistics read, not updated) and get no gradients. Either kernels;
    /// the fast CPU ones go through [`Model::frozen_prefix`] and
    /// [`Model::loss_and_grads_from`].
    pub fn loss_and_grads_frozen(
        &mut self,
        x: &Tensor,
        blocks: usize,
        objective: &impl Objective,
    ) -> Result<(Tensor, GradStore)> {
        if self.kernels == Kernels::Fast && self.device.is_cpu() {
            let acts = self.frozen_prefix(x, blocks)?;
            return self.loss_and_grads_from(acts, blocks, objective);
        }
        let total = self.fast.blocks.len();
        if blocks > total {
            return Err(ModelError::Invalid(format!(
                "the backbone has {total} blocks, not {blocks}"
            )));
        }
        self.num_batches_tracked += 1;
        let f = self.net.backbone.forward_frozen_t(x, blocks)?;
        self.loss_backward(&self.net.head.forward(&f)?, objective)
    }

    /// [`Model::loss_and_grads`] for a model whose stem and blocks before
    /// `first` are frozen: `acts` is their output ([`Model::frozen_prefix`]),
    /// and gradients come for block `first` upward only (the fast CPU
    /// kernels; the same values as a full pass whose first blocks run in
    /// eval mode).
    pub fn loss_and_grads_from(
        &mut self,
        acts: Acts,
        first: usize,
        objective: &impl Objective,
    ) -> Result<(Tensor, GradStore)> {
        let vars = self.vars();
        let (f, tape) = self.fast_cpu("training with frozen layers")?.forward_from(
            &vars,
            acts,
            first,
            Pass::TrainRecord,
        )?;
        let out = self.head_and_backward(&vars, &f, tape.map(FastTape::Cpu), objective)?;
        self.num_batches_tracked += 1;
        Ok(out)
    }

    /// Every tensor of the checkpoint, reference names, in state_dict order,
    /// on the CPU whatever the model's device.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let vars = self.vars();
        let mut out = Vec::new();
        for s in tensor_specs(&self.arch) {
            let t = match s.dtype {
                Dtype::I64 => Tensor::new(self.num_batches_tracked, &Device::Cpu)?,
                Dtype::F32 => vars
                    .get(&s.name)
                    .ok_or_else(|| ModelError::Invalid(format!("tensor {} is missing", s.name)))?
                    .as_tensor()
                    .to_device(&Device::Cpu)?,
            };
            out.push((s.name, t));
        }
        Ok(out)
    }

    /// The safetensors bytes of the model (deterministic: same weights, same bytes).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let state = self.state()?;
        safetensors::serialize(state.iter().map(|(n, t)| (n.as_str(), t)), None)
            .map_err(|e| ModelError::Invalid(format!("serialising the model: {e}")))
    }

    /// Writes the model atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        tsimcne_format::atomic::write_bytes_atomic(path, &self.to_safetensors()?)?;
        Ok(())
    }

    /// Loads a model of architecture `arch` from a safetensors file, ours or
    /// one exported from the PyTorch reference. Every tensor must be present
    /// with the right shape and dtype; extra tensors are an error.
    pub fn load(path: &Path, arch: &ResNetArch, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Unreadable {
            path: path.into(),
            detail: e.to_string(),
        })?;
        Self::load_bytes(path, &bytes, arch, device)
    }

    /// A copy of this model whose last Linear is a fresh `out_dim` layer, as
    /// the recipe's project stage wants: weight N(0, 1), bias uniform in
    /// ±1/√hidden (PyTorch's default), drawn from our stream for `seed`.
    /// Every other tensor, BatchNorm statistics included, is copied bit for bit.
    pub fn with_new_output(&self, out_dim: usize, seed: u64) -> Result<Self> {
        let out = format!("{HEAD}.{HEAD_OUT}");
        let hidden = self.arch.head_hidden;
        let weight = crate::init::draw(
            crate::init::Init::Normal { std: 1.0 },
            out_dim * hidden,
            &mut crate::init::stream(seed, &format!("{out}.weight")),
        );
        let bound = 1.0 / (hidden as f64).sqrt();
        let bias = crate::init::draw(
            crate::init::Init::Uniform { bound },
            out_dim,
            &mut crate::init::stream(seed, &format!("{out}.bias")),
        );
        self.with_output(out_dim, weight, bias)
    }

    /// A copy whose output layer is `weight` (`[out_dim, hidden]`,
    /// row-major) and `bias` (`[out_dim]`); every other tensor is copied.
    pub fn with_output(&self, out_dim: usize, weight: Vec<f32>, bias: Vec<f32>) -> Result<Self> {
        let mut arch = self.arch.clone();
        arch.out_dim = out_dim;
        let out = format!("{HEAD}.{HEAD_OUT}");
        let hidden = arch.head_hidden;
        if weight.len() != out_dim * hidden || bias.len() != out_dim {
            return Err(ModelError::Invalid(format!(
                "an output layer of {out_dim} × {hidden} needs {} weights and {out_dim} biases, not {} and {}",
                out_dim * hidden,
                weight.len(),
                bias.len()
            )));
        }
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self.vars() {
            if !name.starts_with(&format!("{out}.")) {
                tensors.insert(name, var.as_tensor().copy()?);
            }
        }
        tensors.insert(
            format!("{out}.weight"),
            Tensor::from_vec(weight, (out_dim, hidden), &self.device)?,
        );
        tensors.insert(
            format!("{out}.bias"),
            Tensor::from_vec(bias, out_dim, &self.device)?,
        );
        Self::from_tensors(&arch, tensors, self.num_batches_tracked, &self.device)
    }

    /// Overwrites every tensor of the model from `st` (the checkpoint keys
    /// of [`Model::state`]). Tensors whose name starts with one of
    /// `ignore_prefixes` (e.g. optimiser state stored beside the model) are
    /// skipped; any other unknown tensor is an error.
    pub fn assign(
        &mut self,
        path: &Path,
        st: &safetensors::SafeTensors<'_>,
        ignore_prefixes: &[&str],
    ) -> Result<()> {
        let (tensors, nbt) = read_state(path, st, &self.arch, ignore_prefixes)?;
        let vars = self.vars();
        for (name, t) in tensors {
            vars[&name].set(&t.to_device(&self.device)?)?;
        }
        self.num_batches_tracked = nbt;
        Ok(())
    }

    pub fn load_bytes(
        path: &Path,
        bytes: &[u8],
        arch: &ResNetArch,
        device: &Device,
    ) -> Result<Self> {
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Unreadable {
                path: path.into(),
                detail: e.to_string(),
            })?;
        let (tensors, nbt) = read_state(path, &st, arch, &[])?;
        let tensors = tensors
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        Self::from_tensors(arch, tensors, nbt, device)
    }
}

/// The architecture of a safetensors model file with the reference names,
/// read off its tensor shapes: for a model exported from the PyTorch
/// reference, which has no `config.json`. The result is then checked
/// tensor by tensor when the model loads.
pub fn infer_arch(path: &Path, bytes: &[u8]) -> Result<ResNetArch> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Unreadable {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let mismatch = |detail: String| ModelError::Mismatch {
        path: path.into(),
        detail,
    };
    let shape = |name: &str| -> Result<Vec<usize>> {
        st.tensor(name)
            .map(|t| t.shape().to_vec())
            .map_err(|_| mismatch(format!("tensor {name} is missing")))
    };
    let stem = shape(&format!("{BACKBONE}.conv1.weight"))?;
    if stem.len() != 4 {
        return Err(mismatch(format!(
            "{BACKBONE}.conv1.weight has shape {stem:?}, expected 4 dimensions"
        )));
    }
    let (mut widths, mut blocks) = (Vec::new(), Vec::new());
    for stage in 1.. {
        let n = (0..)
            .take_while(|b| {
                st.tensor(&format!("{BACKBONE}.layer{stage}.{b}.conv1.weight"))
                    .is_ok()
            })
            .count();
        if n == 0 {
            break;
        }
        widths.push(shape(&format!("{BACKBONE}.layer{stage}.0.conv1.weight"))?[0]);
        blocks.push(n);
    }
    if widths.is_empty() {
        return Err(mismatch(format!(
            "no {BACKBONE}.layer1 tensors: not a t-SimCNE ResNet"
        )));
    }
    let hidden = shape(&format!("{HEAD}.0.weight"))?;
    let out = shape(&format!("{HEAD}.{HEAD_OUT}.weight"))?;
    if hidden.len() != 2 || out.len() != 2 {
        return Err(mismatch(
            "the projection head's weights are not matrices".into(),
        ));
    }
    Ok(ResNetArch {
        in_channels: stem[1],
        widths,
        blocks,
        head_hidden: hidden[0],
        out_dim: out[0],
    })
}

/// Reads and checks every tensor of `arch` from `st`: (F32 tensors on the
/// CPU by name, the BatchNorm counter). Every tensor must be present with
/// its shape and dtype; unknown tensors are an error unless their name
/// starts with one of `ignore_prefixes`.
fn read_state(
    path: &Path,
    st: &safetensors::SafeTensors<'_>,
    arch: &ResNetArch,
    ignore_prefixes: &[&str],
) -> Result<(HashMap<String, Tensor>, i64)> {
    let mismatch = |detail: String| ModelError::Mismatch {
        path: path.into(),
        detail,
    };
    let specs = tensor_specs(arch);
    let mut tensors = HashMap::new();
    let mut nbt = 0;
    for spec in &specs {
        let view = st
            .tensor(&spec.name)
            .map_err(|_| mismatch(format!("tensor {} is missing", spec.name)))?;
        check_view(spec, &view).map_err(mismatch)?;
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)?;
        match spec.dtype {
            Dtype::I64 => nbt = t.to_scalar::<i64>()?,
            Dtype::F32 => {
                tensors.insert(spec.name.clone(), t);
            }
        }
    }
    let known: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let ignored = |n: &str| ignore_prefixes.iter().any(|p| n.starts_with(p));
    if let Some(extra) = st
        .names()
        .into_iter()
        .find(|n| !known.contains(&n[..]) && !ignored(n))
    {
        return Err(mismatch(format!(
            "unexpected tensor {extra} (does the architecture match?)"
        )));
    }
    Ok((tensors, nbt))
}

fn check_view(
    spec: &TensorSpec,
    view: &safetensors::tensor::TensorView<'_>,
) -> std::result::Result<(), String> {
    let want = match spec.dtype {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::I64 => safetensors::Dtype::I64,
    };
    if view.dtype() != want {
        return Err(format!(
            "tensor {} is {:?}, expected {want:?}",
            spec.name,
            view.dtype()
        ));
    }
    if view.shape() != spec.shape.as_slice() {
        return Err(format!(
            "tensor {} has shape {:?}, expected {:?}",
            spec.name,
            view.shape(),
            spec.shape
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn bn_parts_depend_on_the_channel_size_alone() {
        assert_eq!(BnSums::PerChannel.parts(1 << 20), 1);
        assert_eq!(BnSums::Split.parts(0), 1);
        assert_eq!(BnSums::Split.parts(BnSums::PART_ELEMENTS), 1);
        assert_eq!(BnSums::Split.parts(BnSums::PART_ELEMENTS + 1), 2);
        // resnet18's first layer at 1,024 views: 64 channels of 1,048,576.
        assert_eq!(BnSums::Split.parts(1024 * 32 * 32), 128);
        assert_eq!(BnSums::Split.parts(usize::MAX / 2), BnSums::MAX_PARTS);
    }
    use super::*;
    use crate::preset;

    /// Every preset takes 1- and 3-channel images of 8×8, 28×28 and 32×32
    /// (odd sizes after the stride-2 stages included), in both modes.
    #[test]
    fn presets_take_the_supported_input_shapes() {
        for name in ["tiny", "small", "resnet18"] {
            for (c, s) in [(1, 28), (3, 32), (3, 8), (1, 9)] {
                let arch = preset(name, c, 2).unwrap();
                crate::check_input(&arch, c, s, s).unwrap();
                let mut m = Model::new(&arch, 0, &Device::Cpu).unwrap();
                let x = Tensor::ones((2, c, s, s), DType::F32, &Device::Cpu).unwrap();
                for train in [false, true] {
                    assert_eq!(
                        m.forward_t(&x, train).unwrap().dims(),
                        &[2, 2],
                        "{name} {c}x{s}x{s}"
                    );
                }
            }
        }
        let arch = preset("tiny", 3, 2).unwrap();
        assert!(crate::check_input(&arch, 3, 7, 32).is_err());
        assert!(crate::check_input(&arch, 1, 32, 32).is_err());
    }

    #[test]
    fn bad_model_files_are_named_errors() {
        let arch = preset("tiny", 1, 8).unwrap();
        let m = Model::new(&arch, 0, &Device::Cpu).unwrap();
        let state = m.state().unwrap();
        let p = Path::new("m.safetensors");
        let save = |tensors: &[(String, Tensor)]| {
            safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap()
        };
        let check = |bytes: Vec<u8>, want: &str| {
            let e = Model::load_bytes(p, &bytes, &arch, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(e.contains("m.safetensors") && e.contains(want), "{e}");
        };
        check(save(&state[1..]), "tensor backbone.conv1.weight is missing");
        let mut wrong = state.clone();
        wrong[0].1 = wrong[0].1.flatten_all().unwrap();
        check(save(&wrong), "has shape");
        let mut wrong = state.clone();
        wrong[0].1 = wrong[0].1.to_dtype(DType::F64).unwrap();
        check(save(&wrong), "is F64, expected F32");
        let mut extra = state.clone();
        extra.push((
            "fc.weight".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        ));
        check(save(&extra), "unexpected tensor fc.weight");
        check(
            b"not safetensors".to_vec(),
            "not a readable safetensors file",
        );
        // Another architecture's file.
        let other = preset("tiny", 1, 2).unwrap();
        let o = Model::new(&other, 0, &Device::Cpu).unwrap();
        check(o.to_safetensors().unwrap(), "has shape");
    }

    #[test]
    fn the_same_seed_gives_the_same_file() {
        let arch = preset("tiny", 1, 8).unwrap();
        let a = Model::new(&arch, 3, &Device::Cpu)
            .unwrap()
            .to_safetensors()
            .unwrap();
        assert_eq!(
            a,
            Model::new(&arch, 3, &Device::Cpu)
                .unwrap()
                .to_safetensors()
                .unwrap()
        );
        assert_ne!(
            a,
            Model::new(&arch, 4, &Device::Cpu)
                .unwrap()
                .to_safetensors()
                .unwrap()
        );
    }

    #[test]
    fn output_only_forward_gives_the_same_values_and_output_layer_gradients() {
        let arch = preset("tiny", 1, 2).unwrap();
        let x = Tensor::arange(0f32, 2.0 * 8.0 * 8.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 1, 8, 8))
            .unwrap()
            .affine(0.01, -0.3)
            .unwrap();
        let mut full = Model::new(&arch, 5, &Device::Cpu).unwrap();
        let mut cut = Model::new(&arch, 5, &Device::Cpu).unwrap();
        let a = full.forward_t(&x, true).unwrap();
        let b = cut.forward_output_only_t(&x, true).unwrap();
        let (va, vb): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(va, vb);
        assert_eq!(full.num_batches_tracked, cut.num_batches_tracked);
        let ga = a.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (fa, fb) = (full.vars(), cut.vars());
        for (name, v) in &fa {
            let w = &fb[name];
            if name.starts_with("projection_head.layers.2") {
                let x: Vec<f32> = ga.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let y: Vec<f32> = gb.get(w).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(x, y, "{name}");
            } else if !name.contains("running") {
                assert!(ga.get(v).is_some(), "{name}");
                assert!(gb.get(w).is_none(), "{name} got a gradient");
            }
        }
    }

    #[test]
    fn trainable_can_be_restricted_to_a_prefix() {
        let arch = preset("tiny", 1, 2).unwrap();
        let m = Model::new(&arch, 0, &Device::Cpu).unwrap();
        let head: Vec<String> = m
            .trainable(Some(&["projection_head.layers.2"]))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            head,
            [
                "projection_head.layers.2.weight",
                "projection_head.layers.2.bias"
            ]
        );
        assert!(
            m.trainable(None)
                .iter()
                .all(|(n, _)| !n.contains("running"))
        );
    }
}
