//! cuDNN for the GPU backbone: one handle on candle's stream, and per
//! convolution shape its descriptors and chosen algorithms ([`ConvPlan`]).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::{result, sys};
use cudarc::driver::CudaStream;

use super::{ConvMath, ConvSearch, MemoryFormat, Ptr, WORKSPACE_CAP};
use crate::error::{ModelError, Result};

fn err(what: &str, e: impl std::fmt::Debug) -> ModelError {
    ModelError::Invalid(format!("cuDNN {what}: {e:?}"))
}

/// A cuDNN handle bound to candle's stream.
pub(super) struct Cudnn {
    handle: sys::cudnnHandle_t,
    _stream: Arc<CudaStream>,
}

impl Cudnn {
    pub(super) fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| err("context", e))?;
        let handle = result::create_handle()
            .map_err(|e| err("handle (is libcudnn.so.9 on the library path?)", e))?;
        // SAFETY: a live handle and candle's live stream.
        unsafe { result::set_stream(handle, stream.cu_stream() as *mut _) }
            .map_err(|e| err("stream", e))?;
        Ok(Self {
            handle,
            _stream: stream.clone(),
        })
    }
}

impl Drop for Cudnn {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

/// A convolution's shape: input `[n, cin, h, w]` and weight
/// `[cout, cin, k, k]` (laid out as `format` says: NCHW and `[cout, cin, k,
/// k]`, or NHWC and `[cout, k, k, cin]`), square stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConvKey {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) math: ConvMath,
    pub(crate) search: ConvSearch,
    pub(crate) format: MemoryFormat,
}

impl ConvKey {
    /// `cin→cout k×k/stride on h×w` (the batch left out), for profiles.
    pub(crate) fn label(&self) -> String {
        let k = self.k;
        let format = match self.format {
            MemoryFormat::Nchw => "",
            MemoryFormat::Nhwc => " NHWC",
        };
        format!(
            "{}→{} {k}×{k}/{} on {}×{} {:?}{format}",
            self.cin, self.cout, self.stride, self.h, self.w, self.math
        )
    }

    pub(crate) fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }

    pub(crate) fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);
struct FilterDesc(sys::cudnnFilterDescriptor_t);
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `tensor_desc`, destroyed once.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { result::destroy_filter_descriptor(self.0) };
    }
}
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
    }
}

fn dim(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| ModelError::Invalid(format!("dimension {v} too large for cuDNN")))
}

/// The storage cuDNN reads and writes for `math`: bf16 for
/// [`ConvMath::Bf16`] (products summed in f32), else f32.
fn data_type(math: ConvMath) -> sys::cudnnDataType_t {
    match math {
        ConvMath::Exact | ConvMath::Tf32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        ConvMath::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

/// cuDNN's name of a memory format: for tensors, NCHW or NHWC; for
/// filters `[cout, cin, k, k]` or `[cout, k, k, cin]`.
fn tensor_format(format: MemoryFormat) -> sys::cudnnTensorFormat_t {
    match format {
        MemoryFormat::Nchw => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        MemoryFormat::Nhwc => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
    }
}

/// A tensor `[n, c, h, w]` (the dimensions in this order whatever the
/// layout) laid out as `format` says.
fn tensor_desc(
    (n, c, h, w): (usize, usize, usize, usize),
    dtype: sys::cudnnDataType_t,
    format: MemoryFormat,
) -> Result<TensorDesc> {
    let d = TensorDesc(result::create_tensor_descriptor().map_err(|e| err("tensor", e))?);
    // SAFETY: a fresh descriptor.
    unsafe {
        result::set_tensor4d_descriptor(
            d.0,
            tensor_format(format),
            dtype,
            [dim(n)?, dim(c)?, dim(h)?, dim(w)?],
        )
    }
    .map_err(|e| err("tensor", e))?;
    Ok(d)
}

/// A convolution's descriptors and algorithms, chosen once.
pub(super) struct ConvPlan {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    fwd: sys::cudnnConvolutionFwdAlgo_t,
    bwd_data: sys::cudnnConvolutionBwdDataAlgo_t,
    bwd_filter: sys::cudnnConvolutionBwdFilterAlgo_t,
    /// Workspace bytes enough for all three.
    pub(super) workspace: usize,
}

// SAFETY: descriptors are plain host objects; the plan is used under the
// backbone's `Mutex`.
unsafe impl Send for ConvPlan {}

/// What the three kinds of cuDNN's algorithm rankings (forward,
/// backward-data, backward-filter) have in common.
trait AlgoPerf {
    type Algo: Copy;
    fn algo(&self) -> Self::Algo;
    /// The workspace the heuristics estimate, in bytes.
    fn memory(&self) -> usize;
    fn usable(&self) -> bool;
    fn deterministic(&self) -> bool;
    /// The math the ranking measured or estimated it with (cuDNN ranks
    /// tensor-core variants beside the descriptor's own math).
    fn math(&self) -> sys::cudnnMathType_t;
}

macro_rules! algo_perf {
    ($($perf:ty => $algo:ty),* $(,)?) => {$(
        impl AlgoPerf for $perf {
            type Algo = $algo;
            fn algo(&self) -> $algo {
                self.algo
            }
            fn memory(&self) -> usize {
                self.memory
            }
            fn usable(&self) -> bool {
                self.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && self.memory <= WORKSPACE_CAP
            }
            fn deterministic(&self) -> bool {
                self.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
            }
            fn math(&self) -> sys::cudnnMathType_t {
                self.mathType
            }
        }
    )*};
}

algo_perf! {
    sys::cudnnConvolutionFwdAlgoPerf_t => sys::cudnnConvolutionFwdAlgo_t,
    sys::cudnnConvolutionBwdDataAlgoPerf_t => sys::cudnnConvolutionBwdDataAlgo_t,
    sys::cudnnConvolutionBwdFilterAlgoPerf_t => sys::cudnnConvolutionBwdFilterAlgo_t,
}

/// The first usable deterministic algorithm of cuDNN's ranking (the first
/// `count` of `perf`), else the first usable one (where a shape has no
/// deterministic algorithm; every forward algorithm is deterministic), with
/// its workspace estimate.
///
/// Entries of another math than `only` are skipped: a timed ranking
/// ([`ConvSearch::Timed`], fastest first) of exact f32 also holds
/// tensor-core (TF32) runs, which are not what the convolution runs. (The
/// heuristics' ranking is taken as it is, as on the GPU where it passed:
/// the algorithm runs with the descriptor's math whatever its entry says.)
fn pick<P: AlgoPerf>(
    perf: &[P],
    count: i32,
    only: Option<sys::cudnnMathType_t>,
    what: &str,
) -> Result<(P::Algo, usize)> {
    let ranked: Vec<&P> = perf[..(count.max(0) as usize).min(perf.len())]
        .iter()
        .filter(|p| only.is_none_or(|m| p.math() == m))
        .collect();
    ranked
        .iter()
        .copied()
        .find(|p| p.usable() && p.deterministic())
        .or_else(|| ranked.iter().copied().find(|p| p.usable()))
        .map(|p| (p.algo(), p.memory()))
        .ok_or_else(|| err(what, "none usable"))
}

/// A pass's algorithms ranked by cuDNN, the heuristics' (`$get`) or,
/// `$timed`, by running each (`$find`, which takes the same arguments), and
/// the one [`pick`] takes from the ranking.
macro_rules! ranking {
    ($timed:expr, $get:path, $find:path, $perf:ty, ($($arg:expr),*), $only:expr, $what:expr) => {{
        let mut count = 0;
        // SAFETY: zeroed perf structs are valid (plain data); cuDNN fills
        // `count` of the 16; the handle and descriptors are live.
        let mut perf: [$perf; 16] = unsafe { std::mem::zeroed() };
        let status = if $timed {
            unsafe { $find($($arg,)* 16, &mut count, perf.as_mut_ptr()) }
        } else {
            unsafe { $get($($arg,)* 16, &mut count, perf.as_mut_ptr()) }
        };
        status.result().map_err(|e| err($what, e))?;
        pick(&perf, count, $only, $what)?
    }};
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn scalar(v: &f32) -> *const c_void {
    (v as *const f32).cast()
}

/// An algorithm's name without cuDNN's prefix
/// (`CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM` → `IMPLICIT_GEMM`).
fn algo_name(algo: impl std::fmt::Debug) -> String {
    let name = format!("{algo:?}");
    match name.split_once("_ALGO_") {
        Some((_, rest)) => rest.to_string(),
        None => name,
    }
}

/// The three passes of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl ConvPass {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::BackwardData => "backward-data",
            Self::BackwardFilter => "backward-filter",
        }
    }
}

impl ConvPlan {
    /// The algorithm chosen for `pass`, by name.
    pub(super) fn algo(&self, pass: ConvPass) -> String {
        match pass {
            ConvPass::Forward => algo_name(self.fwd),
            ConvPass::BackwardData => algo_name(self.bwd_data),
            ConvPass::BackwardFilter => algo_name(self.bwd_filter),
        }
    }

    pub(super) fn new(cudnn: &Cudnn, key: ConvKey) -> Result<Self> {
        let dtype = data_type(key.math);
        let x = tensor_desc((key.n, key.cin, key.h, key.w), dtype, key.format)?;
        let y = tensor_desc(
            (key.n, key.cout, key.out_h(), key.out_w()),
            dtype,
            key.format,
        )?;
        let w = FilterDesc(result::create_filter_descriptor().map_err(|e| err("filter", e))?);
        // SAFETY: a fresh descriptor.
        unsafe {
            result::set_filter4d_descriptor(
                w.0,
                dtype,
                tensor_format(key.format),
                [dim(key.cout)?, dim(key.cin)?, dim(key.k)?, dim(key.k)?],
            )
        }
        .map_err(|e| err("filter", e))?;
        let conv =
            ConvDesc(result::create_convolution_descriptor().map_err(|e| err("convolution", e))?);
        let (p, s) = (dim(key.pad)?, dim(key.stride)?);
        let math = match key.math {
            ConvMath::Exact => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            ConvMath::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        };
        // SAFETY: a fresh descriptor.
        unsafe {
            result::set_convolution2d_descriptor(
                conv.0,
                p,
                p,
                s,
                s,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
        }
        .map_err(|e| err("convolution", e))?;
        // SAFETY: as above.
        unsafe { result::set_convolution_math_type(conv.0, math) }
            .map_err(|e| err("convolution math", e))?;
        let h = cudnn.handle;
        // Timed: cuDNN's Find runs every algorithm on buffers of its own
        // (allocated and freed inside the call) and ranks them by time.
        let timed = key.search == ConvSearch::Timed;
        // Exact f32 must not take a tensor-core entry; bf16 and TF32 run
        // on tensor cores with either math type.
        let only = (timed && key.math == ConvMath::Exact).then_some(math);

        // The ranking, first usable algorithm of each.
        let (fwd, fwd_ws) = ranking!(
            timed,
            sys::cudnnGetConvolutionForwardAlgorithm_v7,
            sys::cudnnFindConvolutionForwardAlgorithm,
            sys::cudnnConvolutionFwdAlgoPerf_t,
            (h, x.0, w.0, conv.0, y.0),
            only,
            "forward algorithm"
        );
        let (bwd_data, bd_ws) = ranking!(
            timed,
            sys::cudnnGetConvolutionBackwardDataAlgorithm_v7,
            sys::cudnnFindConvolutionBackwardDataAlgorithm,
            sys::cudnnConvolutionBwdDataAlgoPerf_t,
            (h, w.0, y.0, conv.0, x.0),
            only,
            "backward-data algorithm"
        );
        let (bwd_filter, bf_ws) = ranking!(
            timed,
            sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7,
            sys::cudnnFindConvolutionBackwardFilterAlgorithm,
            sys::cudnnConvolutionBwdFilterAlgoPerf_t,
            (h, x.0, y.0, conv.0, w.0),
            only,
            "backward-filter algorithm"
        );

        // The sizes the chosen algorithms ask for (the heuristics' `memory`
        // is an estimate).
        // SAFETY: live descriptors and handle.
        let sizes = unsafe {
            [
                result::get_convolution_forward_workspace_size(h, x.0, w.0, conv.0, y.0, fwd),
                result::get_convolution_backward_data_workspace_size(
                    h, w.0, y.0, conv.0, x.0, bwd_data,
                ),
                result::get_convolution_backward_filter_workspace_size(
                    h, x.0, y.0, conv.0, w.0, bwd_filter,
                ),
            ]
        };
        let mut workspace = fwd_ws.max(bd_ws).max(bf_ws);
        for s in sizes {
            workspace = workspace.max(s.map_err(|e| err("workspace size", e))?);
        }
        Ok(Self {
            x,
            y,
            w,
            conv,
            fwd,
            bwd_data,
            bwd_filter,
            workspace,
        })
    }

    /// `y = conv(x, w)`.
    pub(super) fn forward(
        &self,
        cudnn: &Cudnn,
        x: Ptr,
        w: Ptr,
        y: Ptr,
        (ws, ws_len): (Ptr, usize),
    ) -> Result<()> {
        // SAFETY: the pointers hold tensors of the descriptors' shapes (the
        // caller's contract) and `ws` at least `ws_len` bytes.
        unsafe {
            result::convolution_forward(
                cudnn.handle,
                scalar(&ONE),
                self.x.0,
                x as *const c_void,
                self.w.0,
                w as *const c_void,
                self.conv.0,
                self.fwd,
                ws as *mut c_void,
                ws_len,
                scalar(&ZERO),
                self.y.0,
                y as *mut c_void,
            )
        }
        .map_err(|e| err("convolution forward", e))
    }

    /// `dx = conv_backward_data(dy, w)`, or `dx += ...` when `accumulate`.
    pub(super) fn backward_data(
        &self,
        cudnn: &Cudnn,
        dy: Ptr,
        w: Ptr,
        dx: Ptr,
        (ws, ws_len): (Ptr, usize),
        accumulate: bool,
    ) -> Result<()> {
        let beta = if accumulate { &ONE } else { &ZERO };
        // SAFETY: as in `forward`.
        unsafe {
            result::convolution_backward_data(
                cudnn.handle,
                scalar(&ONE),
                self.w.0,
                w as *const c_void,
                self.y.0,
                dy as *const c_void,
                self.conv.0,
                self.bwd_data,
                ws as *mut c_void,
                ws_len,
                scalar(beta),
                self.x.0,
                dx as *mut c_void,
            )
        }
        .map_err(|e| err("convolution backward-data", e))
    }

    /// `dw = conv_backward_filter(x, dy)`.
    pub(super) fn backward_filter(
        &self,
        cudnn: &Cudnn,
        x: Ptr,
        dy: Ptr,
        dw: Ptr,
        (ws, ws_len): (Ptr, usize),
    ) -> Result<()> {
        // SAFETY: as in `forward`.
        unsafe {
            result::convolution_backward_filter(
                cudnn.handle,
                scalar(&ONE),
                self.x.0,
                x as *const c_void,
                self.y.0,
                dy as *const c_void,
                self.conv.0,
                self.bwd_filter,
                ws as *mut c_void,
                ws_len,
                scalar(&ZERO),
                self.w.0,
                dw as *mut c_void,
            )
        }
        .map_err(|e| err("convolution backward-filter", e))
    }
}
