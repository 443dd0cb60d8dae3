//! The loss on the GPU without a graph: InfoNCE with the Cauchy kernel of
//! the head's outputs, at a fixed spread for `--map-scale`, forward and
//! backward in two launches (four with a map scale) of `kernels.cu`'s
//! `nce_cauchy_rows`, `nce_cauchy_grad`, `fixed_scale_fwd` and
//! `fixed_scale_bwd`, instead of candle's graph (some twenty ops, each with
//! its backward) and two uploads a step (the self-pair mask and the
//! partner index). The same
//! function as tsimcne-ops' `info_nce_cauchy` and `fixed_scale_*` (checked
//! on CPU threads by tsimcne-model's `tests/cuda_host.rs`); every sum runs
//! in a fixed order, so the same input gives the same bits on one GPU.

use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Storage, Tensor};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{BACKBONE, THREADS, cuda_err, function, ptr, tensor_ptr};
use crate::error::{ModelError, Result};

/// The loss's kernels in `kernels.cu`.
pub(super) const LOSS_KERNELS: [&str; 4] = [
    "nce_cauchy_rows",
    "nce_cauchy_grad",
    "fixed_scale_fwd",
    "fixed_scale_bwd",
];

/// Launches the loss kernel `$name` over `$blocks` blocks of [`THREADS`]
/// threads with the arguments `$arg`.
macro_rules! launch {
    ($stream:expr, $dev:expr, $name:expr, $blocks:expr, $($arg:expr),* $(,)?) => {{
        let f = function($dev, &BACKBONE, $name)?;
        let mut b = $stream.launch_builder(&f);
        $(
            let a = $arg;
            b.arg(&a);
        )*
        let cfg = LaunchConfig {
            grid_dim: ($blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: each call passes the arguments of `$name`'s signature in
        // kernels.cu, pointers to buffers of the sizes its comment gives
        // (for the rows and dim passed), allocated on this stream and freed
        // in its order after the launch.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    }};
}

/// InfoNCE with the Cauchy similarity of the views `z` `[rows, dim]` (F32
/// on a CUDA device; the first `rows / 2` views, then their partners), of
/// `z` centred and scaled to a root mean square coordinate of `map_scale`
/// first when given: the loss `[]` and its gradient by `z` `[rows, dim]`,
/// both on the GPU, queued on candle's stream (nothing is read back).
pub fn info_nce_cauchy(z: &Tensor, map_scale: Option<f64>) -> Result<(Tensor, Tensor)> {
    let (rows, dim) = z.dims2()?;
    if rows < 4 || rows % 2 != 0 {
        return Err(ModelError::Invalid(format!(
            "info_nce needs an even number of at least 4 views, got {rows}"
        )));
    }
    if z.dtype() != DType::F32 {
        return Err(ModelError::Invalid(format!(
            "the GPU loss takes F32 views, not {:?}",
            z.dtype()
        )));
    }
    let Device::Cuda(dev) = z.device() else {
        return Err(ModelError::Invalid(
            "the GPU loss runs on a CUDA device only".into(),
        ));
    };
    let stream = dev.cuda_stream();
    let z = z.contiguous()?;
    let zp = tensor_ptr(&stream, &z)?;
    let f32s = |len: usize| -> Result<CudaSlice<f32>> {
        // SAFETY: f32 has no invalid bit patterns; each kernel below writes
        // every element of its outputs before any is read.
        unsafe { stream.alloc::<f32>(len.max(1)) }.map_err(cuda_err)
    };
    let f64s = |len: usize| -> Result<CudaSlice<f64>> {
        // SAFETY: as `f32s`.
        unsafe { stream.alloc::<f64>(len.max(1)) }.map_err(cuda_err)
    };
    let (r, dm) = (rows as i32, dim as i32);
    // --map-scale: y = the views at their fixed spread; st = the column
    // means, the rms, and room for fixed_scale_bwd's column means.
    let scaled = match map_scale {
        Some(scale) => {
            let (st, y) = (f64s(2 * dim + 1)?, f32s(rows * dim)?);
            let (sp, yp) = (ptr(&stream, &st), ptr(&stream, &y));
            launch!(stream, dev, "fixed_scale_fwd", 1, zp, r, dm, scale, sp, yp);
            Some((scale, st, y))
        }
        None => None,
    };
    let input = match &scaled {
        Some((_, _, y)) => ptr(&stream, y),
        None => zp,
    };
    // a: [rows, rows], dL/dd²(i, j) through row i; row_loss: [rows].
    let (a, row_loss) = (f32s(rows * rows)?, f64s(rows)?);
    let (ap, rp) = (ptr(&stream, &a), ptr(&stream, &row_loss));
    launch!(stream, dev, "nce_cauchy_rows", rows, input, r, dm, ap, rp);
    let (grad, loss) = (f32s(rows * dim)?, f32s(1)?);
    let (gp, lp) = (ptr(&stream, &grad), ptr(&stream, &loss));
    launch!(
        stream,
        dev,
        "nce_cauchy_grad",
        rows,
        input,
        ap,
        rp,
        r,
        dm,
        gp,
        lp
    );
    let grad = match &scaled {
        Some((scale, st, _)) => {
            let dz = f32s(rows * dim)?;
            let (sp, dp) = (ptr(&stream, st), ptr(&stream, &dz));
            launch!(
                stream,
                dev,
                "fixed_scale_bwd",
                1,
                zp,
                gp,
                r,
                dm,
                *scale,
                sp,
                dp
            );
            dz
        }
        None => grad,
    };
    let tensor = |b: CudaSlice<f32>, shape: &[usize]| {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(b, dev.clone()));
        Tensor::from_storage(storage, shape, BackpropOp::none(), false)
    };
    Ok((tensor(loss, &[]), tensor(grad, &[rows, dim])))
}
