//! The backbone on a CUDA GPU: cuDNN convolutions (forward, backward-data
//! and backward-filter), our own batch-norm kernels with the ReLU and the
//! residual addition fused in (`kernels.cu`, compiled by nvcc at build time), and a
//! hand-written backward pass: the GPU twin of [`crate::fast`], same layer
//! plan, same arithmetic (statistics summed in f64), NCHW activations or
//! channels-last ([`MemoryFormat`]).
//!
//! Each convolution shape gets its cuDNN descriptors and algorithms once,
//! cached for the life of the model: the heuristics' first algorithm that
//! is deterministic and fits [`WORKSPACE_CAP`], so the same GPU, cuDNN and
//! seed give the same bits on every run (cuDNN's timing-based search, as
//! PyTorch's `cudnn.benchmark`, would not). Where cuDNN offers no such
//! algorithm for a shape (seen: TF32 backward-data of resnet18 at 2,048
//! views), the first usable one is taken, and that shape's gradients may
//! differ in the last bits between runs.
//!
//! **Invariant:** like the CPU fast path, it reads and writes the model's
//! variables only through their checkpoint names.

#![allow(unsafe_code)] // cuDNN calls and kernel launches on device pointers

mod augment;
mod cudnn;
mod loss;

pub use augment::GpuImages;
pub use loss::info_nce_cauchy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Storage, Tensor, Var};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use tsimcne_format::model_keys::ResNetArch;

use self::cudnn::{ConvKey, ConvPass, ConvPlan, Cudnn};
use crate::FastDiv;
use crate::error::{ModelError, Result};
use crate::fast::{Block, ConvSpec, EPS, FastBackbone, MOMENTUM, Pass, UnitOut};
use crate::model::{BnSums, ConvMath, ConvSearch, MemoryFormat};

/// The most workspace bytes one convolution algorithm may use.
pub(crate) const WORKSPACE_CAP: usize = 1 << 30;

const THREADS: u32 = 256;
/// Every kernel of kernels.cu: a batch-norm body's forms (layout × index
/// arithmetic × storage, see [`launch_indexed`] and [`launch_parts`]), the
/// rest in f32 or also in bf16.
const KERNELS: [&str; 47] = [
    "bn_stats_part",
    "bn_stats_part_fast",
    "bn_stats_part_bf16",
    "bn_stats_part_fast_bf16",
    "bn_apply",
    "bn_apply_fast",
    "bn_apply_bf16",
    "bn_apply_fast_bf16",
    "bn_bwd_part",
    "bn_bwd_part_fast",
    "bn_bwd_part_bf16",
    "bn_bwd_part_fast_bf16",
    "bn_bwd_dx",
    "bn_bwd_dx_fast",
    "bn_bwd_dx_bf16",
    "bn_bwd_dx_fast_bf16",
    "bn_stats_finish",
    "bn_stats_finish_running",
    "bn_eval_coef",
    "bn_running",
    "bn_bwd_finish",
    "avg_pool",
    "avg_pool_bf16",
    "avg_pool_bwd",
    "avg_pool_bwd_bf16",
    "to_bf16",
    "from_bf16",
    "bn_stats_part_nhwc",
    "bn_stats_part_nhwc_bf16",
    "bn_apply_nhwc",
    "bn_apply_nhwc_fast",
    "bn_apply_nhwc_bf16",
    "bn_apply_nhwc_fast_bf16",
    "bn_bwd_part_nhwc",
    "bn_bwd_part_nhwc_bf16",
    "bn_bwd_dx_nhwc",
    "bn_bwd_dx_nhwc_fast",
    "bn_bwd_dx_nhwc_bf16",
    "bn_bwd_dx_nhwc_fast_bf16",
    "avg_pool_nhwc",
    "avg_pool_nhwc_bf16",
    "avg_pool_bwd_nhwc",
    "avg_pool_bwd_nhwc_bf16",
    "to_nhwc",
    "to_nhwc_bf16",
    "from_nhwc",
    "from_nhwc_bf16",
];

fn cuda_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid(format!("CUDA: {e}"))
}

/// One of our kernel sources as `build.rs` compiled it with nvcc.
pub(crate) struct Kernels {
    /// Names the source in errors, and its module in [`function`]'s cache.
    what: &'static str,
    /// Machine code for the GPU generation the build names
    /// (`CUDA_COMPUTE_CAP`), and the PTX, which the driver compiles for a
    /// newer GPU.
    fatbin: &'static [u8],
}

/// `kernels.cu`.
const BACKBONE: Kernels = Kernels {
    what: "the backbone's kernels",
    fatbin: include_bytes!(concat!(env!("OUT_DIR"), "/kernels.fatbin")),
};

/// The kernel `name` of `kernels` on `dev`. Each source is loaded once per
/// process and GPU context, and stays loaded.
fn function(dev: &CudaDevice, kernels: &'static Kernels, name: &str) -> Result<CudaFunction> {
    type Loaded = Vec<(usize, &'static str, Arc<cudarc::driver::CudaModule>)>;
    static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());
    let ctx = dev.cuda_stream().context().clone();
    // The context's handle: the module keeps the context alive, so no
    // other context can take its address.
    let key = ctx.cu_ctx() as usize;
    let module = {
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match loaded
            .iter()
            .find(|(k, w, _)| *k == key && *w == kernels.what)
        {
            Some((_, _, m)) => m.clone(),
            None => {
                let image = cudarc::nvrtc::Ptx::from_binary(kernels.fatbin.to_vec());
                let m = ctx.load_module(image).map_err(|e| {
                    ModelError::Invalid(format!("CUDA: loading {}: {e}", kernels.what))
                })?;
                loaded.push((key, kernels.what, m.clone()));
                m
            }
        }
    };
    module
        .load_function(name)
        .map_err(|e| ModelError::Invalid(format!("CUDA: {name} of {}: {e}", kernels.what)))
}

/// What the driver does with the GPU memory a run frees: the default memory
/// pool of the device, which candle's allocations and ours come from
/// (cudarc allocates stream-ordered, `cuMemAllocAsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreedMemory {
    /// Kept in the pool for the next allocation (release threshold
    /// `u64::MAX`), as PyTorch's caching allocator keeps it. A training
    /// step frees and allocates the same sizes again; released, they would
    /// go back to the driver at each synchronisation (the loss read every
    /// step) and be mapped again the next step, gigabytes a step at 1,024
    /// views. [`crate::DeviceSpec::open`] sets it.
    #[default]
    Keep,
    /// Released to the driver at each synchronisation: the driver's own
    /// default (threshold 0), for comparison (`bench_train`'s `-release`).
    Release,
}

/// The default memory pool of `device`'s GPU, where its context allocates
/// from pools (else `None`: the CPU, or plain `cuMemAlloc`).
fn default_pool(device: &Device) -> Result<Option<cudarc::driver::sys::CUmemoryPool>> {
    let Device::Cuda(dev) = device else {
        return Ok(None);
    };
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    if !ctx.has_async_alloc() {
        return Ok(None);
    }
    // SAFETY: the device of a live context.
    let pool = unsafe { cudarc::driver::result::device::get_default_mem_pool(ctx.cu_device()) }
        .map_err(cuda_err)?;
    Ok(Some(pool))
}

/// Sets what the driver does with the memory freed on `device` (nothing on
/// the CPU, or where the GPU's context has no memory pools).
pub fn set_freed_memory(device: &Device, freed: FreedMemory) -> Result<()> {
    let Some(pool) = default_pool(device)? else {
        return Ok(());
    };
    let mut threshold: u64 = match freed {
        FreedMemory::Keep => u64::MAX,
        FreedMemory::Release => 0,
    };
    // SAFETY: a live pool; the release threshold is a cuuint64_t.
    unsafe {
        cudarc::driver::result::mem_pool::set_attribute(
            pool,
            cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(cuda_err)
}

/// Whether cudarc gives every GPU allocation its own two CUDA events
/// (`cuEventCreate` twice at each allocation, `cuEventDestroy` twice at each
/// free). It records and waits on them only when a context runs more than
/// one stream (cudarc's multi-stream mode), to order their uses across
/// streams; our binaries run everything on the one stream candle opens
/// (`Device::new_cuda`: the per-thread stream; nothing calls `new_stream`
/// or `fork`), so the events are made and never used, on every op's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllocationEvents {
    /// None made: what [`crate::DeviceSpec::open`] sets. Not yet timed on a
    /// GPU against `Made` (`bench_train`'s `-events`).
    #[default]
    None,
    /// Made with every allocation: cudarc's default, for comparison.
    Made,
}

/// Sets whether allocations on `device` from now on get their events
/// (nothing on the CPU). An error where the device's context already runs
/// several streams, whose ordering the events keep.
pub fn set_allocation_events(device: &Device, events: AllocationEvents) -> Result<()> {
    let Device::Cuda(dev) = device else {
        return Ok(());
    };
    let ctx = dev.cuda_stream().context().clone();
    if ctx.is_in_multi_stream_mode() {
        return Err(ModelError::Invalid(
            "CUDA: the device runs several streams; its allocations keep their events".into(),
        ));
    }
    match events {
        // SAFETY: the context runs one stream (checked above; our code
        // creates no other), so no use of a slice has to be ordered against
        // another stream's, which is all the events are for.
        AllocationEvents::None => unsafe { ctx.disable_event_tracking() },
        // SAFETY: as above; slices made while tracking was off stay without
        // events, which only a second stream would need.
        AllocationEvents::Made => unsafe { ctx.enable_event_tracking() },
    }
    Ok(())
}

/// Whether `device`'s allocations get their events (`None` on the CPU).
pub fn allocation_events(device: &Device) -> Option<AllocationEvents> {
    let Device::Cuda(dev) = device else {
        return None;
    };
    Some(if dev.cuda_stream().context().is_event_tracking() {
        AllocationEvents::Made
    } else {
        AllocationEvents::None
    })
}

/// What the driver does with the memory freed on `device`: `None` on the
/// CPU or without memory pools, else [`FreedMemory::Keep`] where the pool's
/// release threshold is `u64::MAX` and [`FreedMemory::Release`] otherwise.
pub fn freed_memory(device: &Device) -> Result<Option<FreedMemory>> {
    let Some(pool) = default_pool(device)? else {
        return Ok(None);
    };
    let mut threshold: u64 = 0;
    // SAFETY: as in `set_freed_memory`.
    unsafe {
        cudarc::driver::result::mem_pool::get_attribute(
            pool,
            cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(cuda_err)?;
    Ok(Some(if threshold == u64::MAX {
        FreedMemory::Keep
    } else {
        FreedMemory::Release
    }))
}

/// Checks, without a GPU, that the kernels loaded at start ([`KERNELS`],
/// and `sgd_step` and the loss's on their own) are exactly the entry points of the build's
/// PTX of `kernels.cu`; the error names what differs. A name missing from
/// either side would otherwise show only on a GPU.
pub fn check_kernel_list() -> Result<()> {
    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
    let entries: std::collections::BTreeSet<&str> = PTX
        .lines()
        .filter_map(|l| l.split_once(".entry ")?.1.split('(').next())
        .map(str::trim)
        .collect();
    let named: std::collections::BTreeSet<&str> = KERNELS
        .iter()
        .copied()
        .chain(["sgd_step"])
        .chain(loss::LOSS_KERNELS)
        .collect();
    let unnamed: Vec<_> = entries.difference(&named).collect();
    let missing: Vec<_> = named.difference(&entries).collect();
    if unnamed.is_empty() && missing.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "kernels.cu's entry points not in KERNELS: {unnamed:?}; \
             KERNELS not in kernels.cu: {missing:?}"
        )))
    }
}

/// A device buffer of f32.
type Buf = CudaSlice<f32>;

/// Batch statistics on the device: per-channel mean and biased variance.
struct Stats {
    mean: Buf,
    var: Buf,
}

/// What a convolution's backward pass needs from its forward pass: its plan
/// key and its weights as the pass read them (in the activations' storage
/// and layout, converted once a step).
struct ConvIn<E> {
    key: ConvKey,
    w: Stored<E>,
}

/// What a block's backward pass needs from its forward pass.
type BlockTape<E> = crate::fast::BlockTape<ConvIn<E>, CudaSlice<E>, Stats>;

/// The saved forward pass of a training step on the GPU, in either storage.
pub struct Tape(Taped);

enum Taped {
    F32(TapeOf<f32>),
    Bf16(TapeOf<u16>),
}

/// The saved forward pass, activations stored as `E`.
struct TapeOf<E> {
    n: usize,
    /// The images as the stem read them, the stem's convolution output
    /// and statistics.
    stem_in: Stored<E>,
    stem: ConvIn<E>,
    stem_c: CudaSlice<E>,
    stem_s: Stats,
    /// `acts[0]` is the stem's output, `acts[i + 1]` block i's.
    acts: Vec<CudaSlice<E>>,
    blocks: Vec<BlockTape<E>>,
    last_hw: usize,
    last_c: usize,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (storage, n, blocks) = match &self.0 {
            Taped::F32(t) => ("f32", t.n, t.blocks.len()),
            Taped::Bf16(t) => ("bf16", t.n, t.blocks.len()),
        };
        f.debug_struct("Tape")
            .field("storage", &storage)
            .field("n", &n)
            .field("blocks", &blocks)
            .finish_non_exhaustive()
    }
}

/// The per-device state: streams, cuDNN, kernels, convolution plans.
struct Gpu {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    cudnn: Cudnn,
    funcs: HashMap<&'static str, CudaFunction>,
    plans: HashMap<ConvKey, ConvPlan>,
    workspace: Option<CudaSlice<u8>>,
    /// The phases timed so far, while profiling.
    profile: Option<Profile>,
}

/// Where the GPU backbone's time goes (see [`CudaBackbone::start_profile`]):
/// each phase (convolution or batch norm, direction, shape, cuDNN
/// algorithm) with its calls and seconds, in the order first run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub phases: Vec<Phase>,
}

/// One phase of a [`Profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub label: String,
    pub calls: u64,
    pub seconds: f64,
}

// SAFETY: the cuDNN handle is used by one thread at a time (the `Mutex` in
// `CudaBackbone`); cuDNN handles may move between threads.
unsafe impl Send for Gpu {}

/// The backbone's layer plan and its GPU state.
pub struct CudaBackbone {
    stem: ConvSpec,
    stem_bn: String,
    blocks: Vec<Block>,
    feature_dim: usize,
    math: ConvMath,
    search: ConvSearch,
    sums: BnSums,
    format: MemoryFormat,
    gpu: Mutex<Option<Gpu>>,
}

impl std::fmt::Debug for CudaBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackbone")
            .field("blocks", &self.blocks.len())
            .field("math", &self.math)
            .finish_non_exhaustive()
    }
}

/// A device pointer, for kernel arguments and cuDNN.
type Ptr = u64;

fn ptr<T>(stream: &CudaStream, b: &CudaSlice<T>) -> Ptr {
    let (p, _sync) = b.device_ptr(stream);
    p
}

/// The device pointer of a contiguous F32 tensor on the GPU. The tensor
/// must outlive every use of the pointer.
fn tensor_ptr(stream: &CudaStream, t: &Tensor) -> Result<Ptr> {
    let (storage, layout) = t.storage_and_layout();
    if !layout.is_contiguous() {
        return Err(ModelError::Invalid(
            "the GPU backbone needs contiguous tensors".into(),
        ));
    }
    match &*storage {
        Storage::Cuda(s) => {
            let slice = s.as_cuda_slice::<f32>()?;
            let (p, _sync) = slice.device_ptr(stream);
            Ok(p + 4 * layout.start_offset() as u64)
        }
        _ => Err(ModelError::Invalid(
            "the GPU backbone got a tensor that is not on the GPU".into(),
        )),
    }
}

fn grid(total: usize) -> u32 {
    total.div_ceil(THREADS as usize) as u32
}

/// A launch's grid: `x` blocks, or `(x, y)`.
trait GridDims {
    fn dims(self) -> (u32, u32, u32);
}

impl GridDims for u32 {
    fn dims(self) -> (u32, u32, u32) {
        (self.max(1), 1, 1)
    }
}

impl GridDims for usize {
    fn dims(self) -> (u32, u32, u32) {
        (self as u32).dims()
    }
}

impl GridDims for (usize, usize) {
    fn dims(self) -> (u32, u32, u32) {
        ((self.0 as u32).max(1), (self.1 as u32).max(1), 1)
    }
}

/// The layout and index arithmetic a batch-norm kernel is launched with
/// (`WideIndex`, `FastIndex`, `LastIndex` or `LastFastIndex` in
/// kernels.cu): NCHW with the `*_fast` kernels for tensors under
/// [`FastDiv::LIMIT`] elements in [`BnSums::Split`], else 64-bit divisions;
/// channels-last likewise, the `*_fast` kernels under the limit whatever the
/// sums.
#[derive(Debug, Clone, Copy)]
enum Index {
    Wide { c: i32, hw: i32 },
    Fast { c: FastDiv, hw: FastDiv },
    LastWide { c: i32 },
    LastFast { c: FastDiv },
}

impl Index {
    /// For a `[n, c, hw]` tensor of `total` elements laid out as `format`.
    fn new(format: MemoryFormat, sums: BnSums, c: usize, hw: usize, total: usize) -> Self {
        let small = (total as u64) < FastDiv::LIMIT;
        match format {
            MemoryFormat::Nhwc => match FastDiv::new(c as u64).filter(|_| small) {
                Some(c) => Self::LastFast { c },
                None => Self::LastWide { c: c as i32 },
            },
            MemoryFormat::Nchw => {
                let fast = match sums {
                    BnSums::Split if small => FastDiv::new(c as u64).zip(FastDiv::new(hw as u64)),
                    BnSums::Split | BnSums::PerChannel => None,
                };
                match fast {
                    Some((c, hw)) => Self::Fast { c, hw },
                    None => Self::Wide {
                        c: c as i32,
                        hw: hw as i32,
                    },
                }
            }
        }
    }
}

/// Launches the elementwise batch-norm kernel `$name`, or `$name` with
/// `_fast`, `_nhwc` or `_nhwc_fast`, by the [`Index`] `$ix`, whose arguments
/// go between `$pre` and `$post`, for activations stored as `$elem`.
macro_rules! launch_indexed {
    ($gpu:expr, $name:literal, $elem:ty, $blocks:expr, $ix:expr, [$($pre:expr),*], [$($post:expr),*] $(,)?) => {{
        match $ix {
            Index::LastWide { c } => {
                launch!($gpu, &kernel::<$elem>(concat!($name, "_nhwc")), $blocks, $($pre,)* c, $($post),*)
            }
            Index::LastFast { c } => launch!(
                $gpu,
                &kernel::<$elem>(concat!($name, "_nhwc_fast")),
                $blocks,
                $($pre,)*
                c.d,
                c.mul,
                c.shift,
                $($post),*
            ),
            Index::Wide { c, hw } => {
                launch!($gpu, &kernel::<$elem>($name), $blocks, $($pre,)* c, hw, $($post),*)
            }
            Index::Fast { c, hw } => launch!(
                $gpu,
                &kernel::<$elem>(concat!($name, "_fast")),
                $blocks,
                $($pre,)*
                c.d,
                c.mul,
                c.shift,
                hw.d,
                hw.mul,
                hw.shift,
                $($post),*
            ),
        }
    }};
}

/// Launches the batch-norm partial-sums kernel `$name` over `$parts` parts
/// of a `[$n, $c, $hw]` tensor, by the [`Index`] `$ix`: NCHW a block per
/// channel and part, the index arguments after `$pre` and `$n`; channels-last
/// (`$name` with `_nhwc`) a block per [`MemoryFormat::TILE`] channels and
/// part, with `$n, $c, $hw`. The partial sums `$part` come last.
macro_rules! launch_parts {
    ($gpu:expr, $name:literal, $elem:ty, $parts:expr, $ix:expr, [$($pre:expr),*], ($n:expr, $c:expr, $hw:expr), $part:expr $(,)?) => {{
        let (n, c, hw): (usize, usize, usize) = ($n, $c, $hw);
        match $ix {
            Index::Wide { c: ci, hw: hwi } => launch!(
                $gpu,
                &kernel::<$elem>($name),
                (c, $parts),
                $($pre,)*
                n as i32,
                ci,
                hwi,
                $part
            ),
            Index::Fast { c: cf, hw: hwf } => launch!(
                $gpu,
                &kernel::<$elem>(concat!($name, "_fast")),
                (c, $parts),
                $($pre,)*
                n as i32,
                cf.d,
                cf.mul,
                cf.shift,
                hwf.d,
                hwf.mul,
                hwf.shift,
                $part
            ),
            Index::LastWide { .. } | Index::LastFast { .. } => launch!(
                $gpu,
                &kernel::<$elem>(concat!($name, "_nhwc")),
                (c.div_ceil(MemoryFormat::TILE), $parts),
                $($pre,)*
                n as i32,
                c as i32,
                hw as i32,
                $part
            ),
        }
    }};
}

/// Launches kernel `$name` over `$blocks` blocks (a [`GridDims`]) of
/// [`THREADS`] threads.
macro_rules! launch {
    ($gpu:expr, $name:expr, $blocks:expr, $($arg:expr),* $(,)?) => {{
        let f = $gpu.func($name)?;
        let mut b = $gpu.stream.launch_builder(f);
        $(
            let a = $arg;
            b.arg(&a);
        )*
        let cfg = LaunchConfig {
            grid_dim: GridDims::dims($blocks),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature in kernels.cu,
        // and every buffer holds the elements the kernel reads or writes.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    }};
}

/// How activations are stored on the GPU: f32, or bf16 as its 16 bits
/// (`u16`, for [`ConvMath::Bf16`]). Batch statistics, scale and shift,
/// features and parameter gradients are f32 in both.
trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Unpin + 'static {
    /// The kernels' name suffix (kernels.cu).
    const SUFFIX: &'static str;
    /// A GPU f32 tensor (contiguous) in this storage, NCHW: its own memory
    /// for f32, a converted copy for bf16.
    fn stored_nchw(gpu: &Gpu, t: &Tensor) -> Result<Stored<Self>>;
    /// An NCHW buffer of this storage as f32: itself, or converted.
    fn widened_nchw(gpu: &Gpu, b: CudaSlice<Self>) -> Result<Buf>;
}

/// A tensor's memory as a pass reads it (see [`Gpu::stored`]): the
/// pointer, and what holds the memory behind it, which must outlive the
/// pointer's use.
struct Stored<E> {
    ptr: Ptr,
    _keep: Keep<E>,
}

/// What holds a [`Stored`]'s memory: the tensor itself, or a converted
/// copy.
#[expect(
    dead_code,
    reason = "held for the memory behind the pointer, never read"
)]
enum Keep<E> {
    Tensor(Tensor),
    Copy(CudaSlice<E>),
}

impl Elem for f32 {
    const SUFFIX: &'static str = "";

    fn stored_nchw(gpu: &Gpu, t: &Tensor) -> Result<Stored<f32>> {
        Ok(Stored {
            ptr: tensor_ptr(&gpu.stream, t)?,
            _keep: Keep::Tensor(t.clone()),
        })
    }

    fn widened_nchw(_: &Gpu, b: Buf) -> Result<Buf> {
        Ok(b)
    }
}

impl Elem for u16 {
    const SUFFIX: &'static str = "_bf16";

    fn stored_nchw(gpu: &Gpu, t: &Tensor) -> Result<Stored<u16>> {
        let len = t.elem_count();
        let src = tensor_ptr(&gpu.stream, t)?;
        let copy = gpu.alloc::<u16>(len)?;
        let dst = ptr(&gpu.stream, &copy);
        launch!(gpu, "to_bf16", grid(len), src, len as i64, dst);
        Ok(Stored {
            ptr: dst,
            _keep: Keep::Copy(copy),
        })
    }

    fn widened_nchw(gpu: &Gpu, b: CudaSlice<u16>) -> Result<Buf> {
        let len = b.len();
        let out = gpu.buf(len)?;
        let (src, dst) = (ptr(&gpu.stream, &b), ptr(&gpu.stream, &out));
        launch!(gpu, "from_bf16", grid(len), src, len as i64, dst);
        Ok(out)
    }
}

/// `name` with the storage's suffix: the kernel to launch.
fn kernel<E: Elem>(name: &str) -> String {
    format!("{name}{}", E::SUFFIX)
}

impl Gpu {
    fn new(dev: &CudaDevice) -> Result<Self> {
        let stream = dev.cuda_stream();
        let mut funcs = HashMap::new();
        for name in KERNELS {
            funcs.insert(name, function(dev, &BACKBONE, name)?);
        }
        Ok(Self {
            dev: dev.clone(),
            cudnn: Cudnn::new(&stream)?,
            stream,
            funcs,
            plans: HashMap::new(),
            workspace: None,
            profile: None,
        })
    }

    /// The label `what` makes, when profiling (else none, and `what` is
    /// not called).
    fn label(&self, what: impl FnOnce() -> String) -> Option<String> {
        self.profile.is_some().then(what)
    }

    /// Runs `f`; with a label (profiling), between two synchronisations of
    /// the stream, adding its time to the label's phase.
    fn timed<T>(
        &mut self,
        label: Option<String>,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let Some(label) = label else {
            return f(self);
        };
        self.stream.synchronize().map_err(cuda_err)?;
        let start = Instant::now();
        let out = f(self)?;
        self.stream.synchronize().map_err(cuda_err)?;
        let seconds = start.elapsed().as_secs_f64();
        let phases = &mut self.profile.as_mut().expect("profiling: a label").phases;
        match phases.iter_mut().find(|p| p.label == label) {
            Some(p) => {
                p.calls += 1;
                p.seconds += seconds;
            }
            None => phases.push(Phase {
                label,
                calls: 1,
                seconds,
            }),
        }
        Ok(out)
    }

    /// A convolution phase's label: what, the shape and the algorithm.
    fn conv_label(&self, pass: ConvPass, key: ConvKey) -> Option<String> {
        self.label(|| {
            let algo = self.plans.get(&key).map_or(String::new(), |p| p.algo(pass));
            format!("conv {} {} [{algo}]", pass.name(), key.label())
        })
    }

    fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs
            .get(name)
            .ok_or_else(|| ModelError::Invalid(format!("no CUDA kernel {name}")))
    }

    /// The partial sums of a batch-norm reduction: two f64 for each of
    /// `parts` parts of each of `c` channels.
    fn part_sums(&self, c: usize, parts: usize) -> Result<CudaSlice<f64>> {
        // SAFETY: f64 has no invalid bit patterns; every part is written
        // before it is read.
        unsafe { self.stream.alloc::<f64>(2 * c * parts) }.map_err(cuda_err)
    }

    /// A GPU f32 NCHW tensor `[n, c, h, w]` (contiguous; the images, or a
    /// convolution's weights `[cout, cin, k, k]`) as the convolutions read
    /// it: in storage `E`, laid out as `format` says.
    fn stored<E: Elem>(&self, t: &Tensor, format: MemoryFormat) -> Result<Stored<E>> {
        match format {
            MemoryFormat::Nchw => E::stored_nchw(self, t),
            MemoryFormat::Nhwc => {
                let (_, c, h, w) = t.dims4()?;
                let len = t.elem_count();
                let src = tensor_ptr(&self.stream, t)?;
                let copy = self.alloc::<E>(len)?;
                let dst = ptr(&self.stream, &copy);
                let (c, hw) = (c as i32, (h * w) as i32);
                launch!(
                    self,
                    &kernel::<E>("to_nhwc"),
                    grid(len),
                    src,
                    c,
                    hw,
                    len as i64,
                    dst
                );
                Ok(Stored {
                    ptr: dst,
                    _keep: Keep::Copy(copy),
                })
            }
        }
    }

    /// A convolution's weight gradient as cuDNN wrote it (in storage `E`
    /// and the layout of `key`'s filter) as f32 `[cout, cin, k, k]`.
    fn widened<E: Elem>(&self, dw: CudaSlice<E>, key: &ConvKey) -> Result<Buf> {
        match key.format {
            MemoryFormat::Nchw => E::widened_nchw(self, dw),
            MemoryFormat::Nhwc => {
                let len = dw.len();
                let out = self.buf(len)?;
                let (src, dst) = (ptr(&self.stream, &dw), ptr(&self.stream, &out));
                let (c, kk) = (key.cin as i32, (key.k * key.k) as i32);
                launch!(
                    self,
                    &kernel::<E>("from_nhwc"),
                    grid(len),
                    src,
                    c,
                    kk,
                    len as i64,
                    dst
                );
                Ok(out)
            }
        }
    }

    /// A buffer of `len` f32 whose contents every user overwrites.
    fn buf(&self, len: usize) -> Result<Buf> {
        self.alloc::<f32>(len)
    }

    /// A buffer of `len` elements whose contents every user overwrites.
    fn alloc<E: Elem>(&self, len: usize) -> Result<CudaSlice<E>> {
        // SAFETY: `Elem`s (f32, u16) have no invalid bit patterns; callers
        // fill the buffer wholly.
        unsafe { self.stream.alloc::<E>(len.max(1)) }.map_err(cuda_err)
    }

    fn tensor(&self, b: Buf, shape: &[usize]) -> Tensor {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(b, self.dev.clone()));
        Tensor::from_storage(storage, shape, BackpropOp::none(), false)
    }

    /// The plan of a convolution shape (built on first use).
    fn plan(&mut self, key: ConvKey) -> Result<&ConvPlan> {
        if !self.plans.contains_key(&key) {
            let plan = ConvPlan::new(&self.cudnn, key)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    /// A workspace of at least `bytes`, and its pointer (0 when none is needed).
    fn workspace(&mut self, bytes: usize) -> Result<(Ptr, usize)> {
        if bytes == 0 {
            return Ok((0, 0));
        }
        let big_enough = self.workspace.as_ref().is_some_and(|w| w.len() >= bytes);
        if !big_enough {
            self.workspace = None;
            // SAFETY: scratch space; cuDNN writes before it reads.
            self.workspace = Some(unsafe { self.stream.alloc::<u8>(bytes) }.map_err(cuda_err)?);
        }
        let w = self.workspace.as_ref().expect("set above");
        let (p, _sync) = w.device_ptr(&self.stream);
        Ok((p, w.len()))
    }

    fn conv_forward<E: Elem>(
        &mut self,
        key: ConvKey,
        x: Ptr,
        w: Ptr,
        y: &mut CudaSlice<E>,
    ) -> Result<()> {
        let ws = self.plan(key)?.workspace;
        let (wp, wl) = self.workspace(ws)?;
        let yp = ptr(&self.stream, y);
        let label = self.conv_label(ConvPass::Forward, key);
        self.timed(label, |g| {
            g.plans[&key].forward(&g.cudnn, x, w, yp, (wp, wl))
        })
    }

    /// `dx = conv_backward_data(dy)`, or `dx += ...` when `accumulate`.
    fn conv_backward_data<E: Elem>(
        &mut self,
        key: ConvKey,
        dy: Ptr,
        w: Ptr,
        dx: &mut CudaSlice<E>,
        accumulate: bool,
    ) -> Result<()> {
        let ws = self.plan(key)?.workspace;
        let (wp, wl) = self.workspace(ws)?;
        let dxp = ptr(&self.stream, dx);
        let label = self.conv_label(ConvPass::BackwardData, key);
        self.timed(label, |g| {
            g.plans[&key].backward_data(&g.cudnn, dy, w, dxp, (wp, wl), accumulate)
        })
    }

    /// The weight gradient, as f32.
    fn conv_backward_filter<E: Elem>(&mut self, key: ConvKey, x: Ptr, dy: Ptr) -> Result<Buf> {
        let ws = self.plan(key)?.workspace;
        let dw = self.alloc::<E>(key.cout * key.cin * key.k * key.k)?;
        let (wp, wl) = self.workspace(ws)?;
        let dwp = ptr(&self.stream, &dw);
        let label = self.conv_label(ConvPass::BackwardFilter, key);
        self.timed(label, |g| {
            g.plans[&key].backward_filter(&g.cudnn, x, dy, dwp, (wp, wl))
        })?;
        let label = self.label(|| "convert weight gradients".to_string());
        self.timed(label, |g| g.widened(dw, &key))
    }
}

/// The hyper-parameters of one [`sgd_step`], as the kernel takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    /// 0: no momentum (no buffers).
    pub momentum: f32,
    pub weight_decay: f32,
    /// Clip every gradient element to ±this first; `None`: no clipping.
    pub clip: Option<f32>,
}

/// A momentum buffer of [`sgd_step`], updated in place.
#[derive(Debug, Clone, Copy)]
pub struct Momentum<'a> {
    pub buf: &'a Tensor,
    /// The buffer holds no history yet: the step sets it to the gradient.
    pub first: bool,
}

/// One parameter of [`sgd_step`]: its values (updated in place), gradient
/// and momentum buffer (needed exactly when the step has momentum).
#[derive(Debug, Clone, Copy)]
pub struct SgdParam<'a> {
    pub w: &'a Var,
    pub g: &'a Tensor,
    pub momentum: Option<Momentum<'a>>,
}

/// One SGD step of every parameter in `params`, in place on the GPU, in one
/// kernel launch (`sgd_step` in kernels.cu, which finds each element's
/// parameter in a table of their pointers, uploaded in one copy): clipping, weight decay,
/// momentum and the update in tsimcne-train's order, each operation rounded
/// alone, so it gives the bits of the CPU's loop and of the step on
/// candle's tensor ops, without their eight launches and four temporaries
/// a parameter. Every tensor must be F32 on one CUDA device, each gradient
/// and buffer of its parameter's size.
pub fn sgd_step(params: &[SgdParam<'_>], s: SgdStep) -> Result<()> {
    let Some(first) = params.first() else {
        return Ok(());
    };
    let Device::Cuda(dev) = first.w.device() else {
        return Err(ModelError::Invalid(
            "the GPU SGD step runs on a CUDA device only".into(),
        ));
    };
    let stream = dev.cuda_stream();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.g.contiguous())
        .collect::<candle_core::Result<_>>()?;
    // The kernel's table: the values', gradients' and buffers' pointers,
    // the starts, the first-step flags (kernels.cu, sgd_step).
    let count = params.len();
    let mut table = vec![0i64; 5 * count + 1];
    let (ptrs, rest) = table.split_at_mut(3 * count);
    let (start, firsts) = rest.split_at_mut(count + 1);
    for (t, (p, grad)) in params.iter().zip(&grads).enumerate() {
        let len = p.w.elem_count();
        if !p.w.device().same_device(first.w.device()) {
            return Err(ModelError::Invalid(
                "the GPU SGD step got parameters on two devices".into(),
            ));
        }
        if grad.elem_count() != len || p.momentum.is_some_and(|m| m.buf.elem_count() != len) {
            return Err(ModelError::Invalid(
                "the GPU SGD step got a gradient or buffer of another size than its parameter"
                    .into(),
            ));
        }
        if (s.momentum != 0.0) != p.momentum.is_some() {
            return Err(ModelError::Invalid(
                "the GPU SGD step needs a momentum buffer exactly when momentum is not 0".into(),
            ));
        }
        let wp = tensor_ptr(&stream, p.w.as_tensor())?;
        ptrs[t] = wp as i64;
        ptrs[count + t] = tensor_ptr(&stream, grad)? as i64;
        (ptrs[2 * count + t], firsts[t]) = match p.momentum {
            Some(m) => (tensor_ptr(&stream, m.buf)? as i64, i64::from(m.first)),
            None => (wp as i64, 0),
        };
        start[t + 1] = start[t] + len as i64;
    }
    let total = start[count];
    let table = stream.clone_htod(&table).map_err(cuda_err)?;
    let f = function(dev, &BACKBONE, "sgd_step")?;
    let tp = ptr(&stream, &table);
    let count = count as i32;
    let has_buf = i32::from(s.momentum != 0.0);
    let (has_clip, clip) = (i32::from(s.clip.is_some()), s.clip.unwrap_or(0.0));
    let mut l = stream.launch_builder(&f);
    l.arg(&tp)
        .arg(&count)
        .arg(&has_clip)
        .arg(&clip)
        .arg(&s.weight_decay)
        .arg(&has_buf)
        .arg(&s.momentum)
        .arg(&s.lr);
    let cfg = LaunchConfig {
        grid_dim: GridDims::dims(grid(total as usize)),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match sgd_step's signature in kernels.cu; the
    // table holds `count` pointers of each kind, `count + 1` starts and
    // `count` flags, each parameter, gradient and buffer the elements its
    // starts give it (checked above), and the parameters and buffers are
    // written only by this kernel on the stream candle's ops use. The table
    // is freed in stream order.
    unsafe { l.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

impl CudaBackbone {
    pub fn new(arch: &ResNetArch, math: ConvMath) -> Self {
        let plan = FastBackbone::new(arch);
        Self {
            stem: plan.stem.clone(),
            stem_bn: plan.stem_bn.clone(),
            blocks: plan.blocks.clone(),
            feature_dim: plan.feature_dim,
            math,
            search: ConvSearch::default(),
            sums: BnSums::default(),
            format: MemoryFormat::default(),
            gpu: Mutex::new(None),
        }
    }

    /// The convolutions' arithmetic from now on (plans are kept per
    /// arithmetic, so switching back reuses them).
    pub fn set_math(&mut self, math: ConvMath) {
        self.math = math;
    }

    /// How convolution algorithms are chosen from now on (plans are kept
    /// per choice).
    pub fn set_search(&mut self, search: ConvSearch) {
        self.search = search;
    }

    pub fn set_bn_sums(&mut self, sums: BnSums) {
        self.sums = sums;
    }

    /// The activations' layout from now on (plans are kept per layout).
    pub fn set_format(&mut self, format: MemoryFormat) {
        self.format = format;
    }

    /// The parts a batch-norm sum over `rows` values of each of `c`
    /// channels is cut into: fixed by the shape, the layout and the sums.
    fn parts(&self, c: usize, rows: usize) -> usize {
        match self.format {
            MemoryFormat::Nchw => self.sums.parts(rows),
            MemoryFormat::Nhwc => MemoryFormat::parts(rows, c),
        }
    }

    /// Starts timing each phase of the passes on `device`: every
    /// convolution and batch-norm phase then runs between two stream
    /// synchronisations, so the step as a whole gets slower.
    /// [`Self::take_profile`] returns the times and ends it.
    pub fn start_profile(&self, device: &Device) -> Result<()> {
        self.with_gpu(device, |gpu| {
            gpu.profile = Some(Profile::default());
            Ok(())
        })
    }

    /// The phases timed since [`Self::start_profile`] (none if it was not
    /// called), ending the profile.
    pub fn take_profile(&self) -> Option<Profile> {
        self.gpu.lock().ok()?.as_mut()?.profile.take()
    }

    fn key(&self, spec: &ConvSpec, n: usize, h: usize, w: usize) -> ConvKey {
        ConvKey {
            n,
            cin: spec.cin,
            h,
            w,
            cout: spec.cout,
            k: spec.k,
            stride: spec.stride,
            pad: spec.k / 2,
            math: self.math,
            search: self.search,
            format: self.format,
        }
    }

    fn with_gpu<T>(&self, device: &Device, f: impl FnOnce(&mut Gpu) -> Result<T>) -> Result<T> {
        let Device::Cuda(dev) = device else {
            return Err(ModelError::Invalid(
                "the GPU backbone runs on a CUDA device only".into(),
            ));
        };
        let mut guard = self
            .gpu
            .lock()
            .map_err(|_| ModelError::Invalid("poisoned GPU state".into()))?;
        if guard.as_ref().is_none_or(|g| g.dev.id() != dev.id()) {
            *guard = Some(Gpu::new(dev)?);
        }
        f(guard.as_mut().expect("set above"))
    }

    /// Images `[n, c, h, w]` on the GPU to features `[n, feature]`; as
    /// [`FastBackbone::forward`].
    pub fn forward(
        &self,
        vars: &HashMap<String, Var>,
        x: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Option<Tape>)> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.stem.cin {
            return Err(ModelError::Invalid(format!(
                "the images have {c} channels, the model takes {}",
                self.stem.cin
            )));
        }
        let x = x.contiguous()?;
        let device = x.device().clone();
        self.with_gpu(&device, |gpu| match self.math {
            ConvMath::Bf16 => {
                let (f, t) = self.forward_on::<u16>(gpu, vars, x, n, h, w, pass)?;
                Ok((f, t.map(|t| Tape(Taped::Bf16(t)))))
            }
            ConvMath::Exact | ConvMath::Tf32 => {
                let (f, t) = self.forward_on::<f32>(gpu, vars, x, n, h, w, pass)?;
                Ok((f, t.map(|t| Tape(Taped::F32(t)))))
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_on<E: Elem>(
        &self,
        gpu: &mut Gpu,
        vars: &HashMap<String, Var>,
        x: Tensor,
        n: usize,
        mut h: usize,
        mut w: usize,
        pass: Pass,
    ) -> Result<(Tensor, Option<TapeOf<E>>)> {
        let train = pass != Pass::Eval;
        let record = pass == Pass::TrainRecord;
        let var = |name: &str| -> Result<&Var> {
            vars.get(name)
                .ok_or_else(|| ModelError::Invalid(format!("the model has no tensor {name}")))
        };
        let vptr = |gpu: &Gpu, name: &str| -> Result<Ptr> {
            tensor_ptr(&gpu.stream, var(name)?.as_tensor())
        };

        // One convolution + BN (+ residual) (+ ReLU) unit: `[n, cin, h, w]`
        // → `[n, cout, h/stride, w/stride]`.
        let unit = |gpu: &mut Gpu,
                    x: Ptr,
                    spec: &ConvSpec,
                    bn: &str,
                    h: usize,
                    w: usize,
                    residual: Option<Ptr>,
                    relu: bool|
         -> Result<UnitOut<ConvIn<E>, CudaSlice<E>, Stats>> {
            let key = self.key(spec, n, h, w);
            let (ho, wo) = (key.out_h(), key.out_w());
            let (cout, hw) = (spec.cout, ho * wo);
            let len = n * cout * hw;
            let mut conv_out = gpu.alloc::<E>(len)?;
            let label = gpu.label(|| "convert weights".to_string());
            let weight = gpu.timed(label, |g| {
                g.stored::<E>(var(&spec.weight)?.as_tensor(), self.format)
            })?;
            gpu.conv_forward(key, x, weight.ptr, &mut conv_out)?;
            let label = gpu.label(|| format!("batch norm forward {cout}×{ho}×{wo}"));
            let (stats, out) = gpu.timed(label, |gpu| {
                let gamma = vptr(gpu, &format!("{bn}.weight"))?;
                let beta = vptr(gpu, &format!("{bn}.bias"))?;
                let scale = gpu.buf(cout)?;
                let shift = gpu.buf(cout)?;
                let stats = Stats {
                    mean: gpu.buf(cout)?,
                    var: gpu.buf(cout)?,
                };
                let s = &gpu.stream;
                let (cp, scp, shp) = (ptr(s, &conv_out), ptr(s, &scale), ptr(s, &shift));
                let ix = Index::new(self.format, self.sums, cout, hw, len);
                if train {
                    let (mp, vp) = (ptr(s, &stats.mean), ptr(s, &stats.var));
                    let parts = self.parts(cout, n * hw);
                    let part = gpu.part_sums(cout, parts)?;
                    let pp = ptr(&gpu.stream, &part);
                    launch_parts!(gpu, "bn_stats_part", E, parts, ix, [cp], (n, cout, hw), pp);
                    // The running statistics, in the CPU path's f32 arithmetic.
                    let rows = (n * hw) as f64;
                    let keep = (1.0 - MOMENTUM) as f32;
                    let unbias = (MOMENTUM * rows / (rows - 1.0)) as f32;
                    let (rm_name, rv_name) =
                        (format!("{bn}.running_mean"), format!("{bn}.running_var"));
                    let (rm, rv) = (vptr(gpu, &rm_name)?, vptr(gpu, &rv_name)?);
                    let (parts, n, c, hw) = (parts as i32, n as i32, cout as i32, hw as i32);
                    match self.sums {
                        // In place, in the finishing launch (the running
                        // statistics are read by nothing else on the stream
                        // in between, as SGD's weights).
                        BnSums::Split => launch!(
                            gpu,
                            "bn_stats_finish_running",
                            grid(cout),
                            pp,
                            parts,
                            n,
                            c,
                            hw,
                            gamma,
                            beta,
                            EPS,
                            keep,
                            MOMENTUM as f32,
                            unbias,
                            rm,
                            rv,
                            mp,
                            vp,
                            scp,
                            shp
                        ),
                        BnSums::PerChannel => {
                            launch!(
                                gpu,
                                "bn_stats_finish",
                                grid(cout),
                                pp,
                                parts,
                                n,
                                c,
                                hw,
                                gamma,
                                beta,
                                EPS,
                                mp,
                                vp,
                                scp,
                                shp
                            );
                            let new_m = gpu.buf(cout)?;
                            let new_v = gpu.buf(cout)?;
                            let (nmp, nvp) = (ptr(&gpu.stream, &new_m), ptr(&gpu.stream, &new_v));
                            launch!(
                                gpu,
                                "bn_running",
                                grid(cout),
                                rm,
                                rv,
                                mp,
                                vp,
                                keep,
                                MOMENTUM as f32,
                                unbias,
                                c,
                                nmp,
                                nvp
                            );
                            var(&rm_name)?.set(&gpu.tensor(new_m, &[cout]))?;
                            var(&rv_name)?.set(&gpu.tensor(new_v, &[cout]))?;
                        }
                    }
                } else {
                    let rm = vptr(gpu, &format!("{bn}.running_mean"))?;
                    let rv = vptr(gpu, &format!("{bn}.running_var"))?;
                    launch!(
                        gpu,
                        "bn_eval_coef",
                        grid(cout),
                        gamma,
                        beta,
                        rm,
                        rv,
                        EPS,
                        cout as i32,
                        scp,
                        shp
                    );
                }
                let out = gpu.alloc::<E>(len)?;
                let op = ptr(&gpu.stream, &out);
                let (rp, has_res) = match residual {
                    Some(r) => (r, 1i32),
                    None => (cp, 0i32),
                };
                launch_indexed!(
                    gpu,
                    "bn_apply",
                    E,
                    grid(len),
                    ix,
                    [cp, scp, shp, rp, has_res, i32::from(relu)],
                    [len as i64, op],
                );
                Ok((stats, out))
            })?;
            Ok((ConvIn { key, w: weight }, conv_out, stats, out))
        };

        let label = gpu.label(|| "convert images".to_string());
        let images = gpu.timed(label, |g| g.stored::<E>(&x, self.format))?;
        // [n, cin, h, w] → [n, w0, h, w]
        let (stem, stem_c, stem_s, mut act) =
            unit(gpu, images.ptr, &self.stem, &self.stem_bn, h, w, None, true)?;
        let mut acts = Vec::new();
        let mut tapes = Vec::new();
        for b in &self.blocks {
            // [n, cin, h, w] → [n, cout, h/stride, w/stride]
            let (tape, out, hw) = b.forward(
                &act,
                (h, w),
                |x: &CudaSlice<E>, spec, bn, h, w, residual: Option<&CudaSlice<E>>, relu| {
                    let xp = ptr(&gpu.stream, x);
                    let rp = residual.map(|r| ptr(&gpu.stream, r));
                    unit(gpu, xp, spec, bn, h, w, rp, relu)
                },
                drop,
            )?;
            let prev = std::mem::replace(&mut act, out);
            if record {
                tapes.push(tape);
                acts.push(prev);
            }
            (h, w) = hw;
        }
        // Global average pool: [n, c, h·w] (or [n, h·w, c]) → [n, c]
        let rows = n * self.feature_dim;
        let feat = gpu.buf(rows)?;
        let (ip, fp) = (ptr(&gpu.stream, &act), ptr(&gpu.stream, &feat));
        let (c, hw) = (self.feature_dim as i32, (h * w) as i32);
        let label = gpu.label(|| "pool forward".to_string());
        gpu.timed(label, |gpu| {
            match self.format {
                MemoryFormat::Nchw => {
                    launch!(
                        gpu,
                        &kernel::<E>("avg_pool"),
                        grid(rows),
                        ip,
                        rows as i32,
                        hw,
                        fp
                    )
                }
                MemoryFormat::Nhwc => launch!(
                    gpu,
                    &kernel::<E>("avg_pool_nhwc"),
                    grid(rows),
                    ip,
                    rows as i32,
                    c,
                    hw,
                    fp
                ),
            }
            Ok(())
        })?;
        let feat = gpu.tensor(feat, &[n, self.feature_dim]);
        if !record {
            return Ok((feat, None));
        }
        acts.push(act);
        let tape = TapeOf {
            n,
            stem_in: images,
            stem,
            stem_c,
            stem_s,
            acts,
            blocks: tapes,
            last_hw: h * w,
            last_c: self.feature_dim,
        };
        Ok((feat, Some(tape)))
    }

    /// Backpropagates `d_feat` (`[n, feature]`) through the recorded pass;
    /// returns the gradient of every backbone parameter, by checkpoint name.
    pub fn backward(
        &self,
        vars: &HashMap<String, Var>,
        tape: Tape,
        d_feat: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        let (n, last_c) = match &tape.0 {
            Taped::F32(t) => (t.n, t.last_c),
            Taped::Bf16(t) => (t.n, t.last_c),
        };
        if d_feat.elem_count() != n * last_c {
            return Err(ModelError::Invalid(
                "feature gradient of the wrong shape".into(),
            ));
        }
        let d_feat = d_feat.contiguous()?;
        self.with_gpu(d_feat.device(), |gpu| match tape.0 {
            Taped::F32(t) => self.backward_on(gpu, vars, t, &d_feat),
            Taped::Bf16(t) => self.backward_on(gpu, vars, t, &d_feat),
        })
    }

    fn backward_on<E: Elem>(
        &self,
        gpu: &mut Gpu,
        vars: &HashMap<String, Var>,
        tape: TapeOf<E>,
        d_feat: &Tensor,
    ) -> Result<Vec<(String, Tensor)>> {
        let var = |name: &str| -> Result<&Var> {
            vars.get(name)
                .ok_or_else(|| ModelError::Invalid(format!("the model has no tensor {name}")))
        };
        let vptr = |gpu: &Gpu, name: &str| -> Result<Ptr> {
            tensor_ptr(&gpu.stream, var(name)?.as_tensor())
        };
        let mut grads: Vec<(String, Tensor)> = Vec::new();
        let mut bn_grads: Vec<(String, Buf, Buf)> = Vec::new();

        // BN backward of `y = relu(bn(x) + residual)` (ReLU when `y` is
        // given): writes dx, and the masked dy into `dres` when given.
        let bn_backward = |gpu: &mut Gpu,
                           prefix: &str,
                           key: &ConvKey,
                           x: &CudaSlice<E>,
                           y: Option<&CudaSlice<E>>,
                           dy: &CudaSlice<E>,
                           stats: &Stats,
                           dres: Option<&CudaSlice<E>>|
         -> Result<(CudaSlice<E>, Buf, Buf)> {
            let (c, hw) = (key.cout, key.out_h() * key.out_w());
            let len = key.n * c * hw;
            let label =
                gpu.label(|| format!("batch norm backward {c}×{}×{}", key.out_h(), key.out_w()));
            gpu.timed(label, |gpu| {
                let gamma = vptr(gpu, &format!("{prefix}.weight"))?;
                let (ca, cb, cd) = (gpu.buf(c)?, gpu.buf(c)?, gpu.buf(c)?);
                let (dgamma, dbeta) = (gpu.buf(c)?, gpu.buf(c)?);
                let dx = gpu.alloc::<E>(len)?;
                let s = &gpu.stream;
                let xp = ptr(s, x);
                let (yp, has_y) = match y {
                    Some(y) => (ptr(s, y), 1i32),
                    None => (xp, 0i32),
                };
                let dyp = ptr(s, dy);
                let (ap, bp, dp) = (ptr(s, &ca), ptr(s, &cb), ptr(s, &cd));
                let (dgp, dbp) = (ptr(s, &dgamma), ptr(s, &dbeta));
                let (mp, vp) = (ptr(s, &stats.mean), ptr(s, &stats.var));
                let dxp = ptr(s, &dx);
                let (rp, has_dres) = match dres {
                    Some(r) => (ptr(s, r), 1i32),
                    None => (dxp, 0i32),
                };
                let parts = self.parts(c, key.n * hw);
                let part = gpu.part_sums(c, parts)?;
                let pp = ptr(&gpu.stream, &part);
                let ix = Index::new(self.format, self.sums, c, hw, len);
                launch_parts!(
                    gpu,
                    "bn_bwd_part",
                    E,
                    parts,
                    ix,
                    [xp, yp, dyp, has_y],
                    (key.n, c, hw),
                    pp
                );
                launch!(
                    gpu,
                    "bn_bwd_finish",
                    grid(c),
                    pp,
                    parts as i32,
                    key.n as i32,
                    c as i32,
                    hw as i32,
                    gamma,
                    mp,
                    vp,
                    EPS,
                    ap,
                    bp,
                    dp,
                    dgp,
                    dbp
                );
                launch_indexed!(
                    gpu,
                    "bn_bwd_dx",
                    E,
                    grid(len),
                    ix,
                    [xp, yp, dyp, has_y, ap, bp, dp],
                    [len as i64, dxp, rp, has_dres],
                );
                Ok((dx, dgamma, dbeta))
            })
        };

        let TapeOf {
            n,
            stem_in,
            stem,
            stem_c,
            stem_s,
            mut acts,
            blocks,
            last_hw,
            last_c,
        } = tape;
        // [n, c] → [n, c, h·w] (or [n, h·w, c])
        let total = n * last_c * last_hw;
        let mut d = gpu.alloc::<E>(total)?;
        {
            let (fp, dp) = (tensor_ptr(&gpu.stream, d_feat)?, ptr(&gpu.stream, &d));
            let (c, hw) = (last_c as i32, last_hw as i32);
            let label = gpu.label(|| "pool backward".to_string());
            gpu.timed(label, |gpu| {
                match self.format {
                    MemoryFormat::Nchw => launch!(
                        gpu,
                        &kernel::<E>("avg_pool_bwd"),
                        grid(total),
                        fp,
                        hw,
                        total as i64,
                        dp
                    ),
                    MemoryFormat::Nhwc => launch!(
                        gpu,
                        &kernel::<E>("avg_pool_bwd_nhwc"),
                        grid(total),
                        fp,
                        c,
                        hw,
                        total as i64,
                        dp
                    ),
                }
                Ok(())
            })?;
        }
        let conv_grad = |gpu: &Gpu, spec: &ConvSpec, dw: Buf| -> (String, Tensor) {
            let t = gpu.tensor(dw, &[spec.cout, spec.cin, spec.k, spec.k]);
            (spec.weight.clone(), t)
        };
        for (b, t) in self.blocks.iter().zip(blocks).rev() {
            let out = acts
                .pop()
                .ok_or_else(|| ModelError::Invalid("tape too short".into()))?;
            let x = acts
                .last()
                .ok_or_else(|| ModelError::Invalid("tape too short".into()))?;
            let xp = ptr(&gpu.stream, x);
            // out = relu(bn2(c2) + shortcut): dc2 and the masked gradient g.
            let g = gpu.alloc::<E>(t.c2.len())?;
            let (dc2, dg2, db2) = bn_backward(
                gpu,
                &b.bn2,
                &t.g2.key,
                &t.c2,
                Some(&out),
                &d,
                &t.s2,
                Some(&g),
            )?;
            bn_grads.push((b.bn2.clone(), dg2, db2));
            let mut dx = match (&b.shortcut, &t.short) {
                (Some((spec, bn)), Some((gs, cs, ss))) => {
                    let (dcs, dgs, dbs) = bn_backward(gpu, bn, &gs.key, cs, None, &g, ss, None)?;
                    bn_grads.push((bn.clone(), dgs, dbs));
                    let dcsp = ptr(&gpu.stream, &dcs);
                    let dw = gpu.conv_backward_filter::<E>(gs.key, xp, dcsp)?;
                    grads.push(conv_grad(gpu, spec, dw));
                    let mut dx = gpu.alloc::<E>(x.len())?;
                    gpu.conv_backward_data(gs.key, dcsp, gs.w.ptr, &mut dx, false)?;
                    dx
                }
                _ => g,
            };
            let (a1p, dc2p) = (ptr(&gpu.stream, &t.a1), ptr(&gpu.stream, &dc2));
            let dw = gpu.conv_backward_filter::<E>(t.g2.key, a1p, dc2p)?;
            grads.push(conv_grad(gpu, &b.conv2, dw));
            let mut da1 = gpu.alloc::<E>(t.a1.len())?;
            gpu.conv_backward_data(t.g2.key, dc2p, t.g2.w.ptr, &mut da1, false)?;
            let (dc1, dg1, db1) = bn_backward(
                gpu,
                &b.bn1,
                &t.g1.key,
                &t.c1,
                Some(&t.a1),
                &da1,
                &t.s1,
                None,
            )?;
            bn_grads.push((b.bn1.clone(), dg1, db1));
            let dc1p = ptr(&gpu.stream, &dc1);
            let dw = gpu.conv_backward_filter::<E>(t.g1.key, xp, dc1p)?;
            grads.push(conv_grad(gpu, &b.conv1, dw));
            gpu.conv_backward_data(t.g1.key, dc1p, t.g1.w.ptr, &mut dx, true)?;
            d = dx;
        }
        // The stem: no gradient for the images.
        let stem_out = acts
            .pop()
            .ok_or_else(|| ModelError::Invalid("tape too short".into()))?;
        let (dc0, dg0, db0) = bn_backward(
            gpu,
            &self.stem_bn,
            &stem.key,
            &stem_c,
            Some(&stem_out),
            &d,
            &stem_s,
            None,
        )?;
        bn_grads.push((self.stem_bn.clone(), dg0, db0));
        let dcp = ptr(&gpu.stream, &dc0);
        let dw = gpu.conv_backward_filter::<E>(stem.key, stem_in.ptr, dcp)?;
        grads.push(conv_grad(gpu, &self.stem, dw));
        for (prefix, dgamma, dbeta) in bn_grads {
            let c = dgamma.len();
            grads.push((format!("{prefix}.weight"), gpu.tensor(dgamma, &[c])));
            grads.push((format!("{prefix}.bias"), gpu.tensor(dbeta, &[c])));
        }
        Ok(grads)
    }
}
