//! Augmentation on the GPU: an image table resident in GPU memory and the
//! kernel of `augment.cu`, which makes the views of
//! [`tsimcne_augment::two_views_of`] from the same parameters, drawn on the
//! CPU from the same keyed streams ([`tsimcne_augment::pack_two_views`]),
//! with the CPU's bits: the kernel is compiled without fused multiply-adds
//! and follows the CPU's order of operations (checked on the CPU by
//! tsimcne-model's `tests/cuda_host.rs`).

use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Storage, Tensor};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use tsimcne_augment::{AugmentConfig, Shape, VIEW_FLOATS, VIEW_INTS};

use super::{Kernels, THREADS, cuda_err, function};
use crate::error::{ModelError, Result};

/// `augment.cu`, compiled without fused multiply-adds (`build.rs`).
const AUGMENT: Kernels = Kernels {
    what: "the augmentation kernel",
    fatbin: include_bytes!(concat!(env!("OUT_DIR"), "/augment.fatbin")),
};

/// The u8 HWC rows of an image table in GPU memory.
pub struct GpuImages {
    dev: CudaDevice,
    pixels: CudaSlice<u8>,
    shape: Shape,
    rows: usize,
}

impl std::fmt::Debug for GpuImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuImages")
            .field("shape", &self.shape)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl GpuImages {
    /// Copies `pixels` (rows of `shape`, u8 HWC, one after another) to the
    /// GPU `device`.
    pub fn upload(device: &Device, pixels: &[u8], shape: Shape) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            return Err(ModelError::Invalid(
                "GPU augmentation runs on a CUDA device only".into(),
            ));
        };
        let len = shape.len();
        if len == 0 || !pixels.len().is_multiple_of(len) || i32::try_from(len).is_err() {
            return Err(ModelError::Invalid(format!(
                "GPU augmentation: {} bytes are not rows of {shape:?}",
                pixels.len()
            )));
        }
        let stream = dev.cuda_stream();
        let gpu = stream.clone_htod(pixels).map_err(cuda_err)?;
        Ok(Self {
            dev: dev.clone(),
            pixels: gpu,
            shape,
            rows: pixels.len() / len,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The views whose packed parameters are `ints` and `floats`
    /// ([`tsimcne_augment::pack_view`], one view after another), with
    /// `cfg`'s normalisation: `[views, c, h, w]` on the GPU.
    pub fn views(&self, ints: &[i32], floats: &[f32], cfg: &AugmentConfig) -> Result<Tensor> {
        let views = ints.len() / VIEW_INTS;
        let Shape {
            height: h,
            width: w,
            channels: c,
        } = self.shape;
        if ints.len() != views * VIEW_INTS || floats.len() != views * VIEW_FLOATS || views == 0 {
            return Err(ModelError::Invalid(
                "GPU augmentation: packed view parameters of the wrong length".into(),
            ));
        }
        // The kernel trusts its parameters: each must address its image.
        for q in ints.chunks_exact(VIEW_INTS) {
            let [image, top, left, ch, cw] = [q[0], q[1], q[2], q[3], q[4]].map(|v| v as i64);
            let fits = (0..self.rows as i64).contains(&image)
                && top >= 0
                && left >= 0
                && ch >= 1
                && cw >= 1
                && top + ch <= h as i64
                && left + cw <= w as i64
                && q[8..12].iter().all(|o| (0..4).contains(o));
            if !fits {
                return Err(ModelError::Invalid(format!(
                    "GPU augmentation: view parameters {q:?} do not fit {} images of {h}x{w}",
                    self.rows
                )));
            }
        }
        let (mean, std) = match &cfg.normalize {
            Some((m, s)) if m.len() == c && s.len() == c => (m.clone(), s.clone()),
            Some(_) => {
                return Err(ModelError::Invalid(format!(
                    "GPU augmentation: the normalisation does not have {c} channels"
                )));
            }
            None => (vec![0.0; c], vec![1.0; c]),
        };
        let stream = self.dev.cuda_stream();
        let up = |v: &[f32]| stream.clone_htod(v).map_err(cuda_err);
        let vi = stream.clone_htod(ints).map_err(cuda_err)?;
        let (vf, mp, sp) = (up(floats)?, up(&mean)?, up(&std)?);
        let len = views * self.shape.len();
        // SAFETY: f32 has no invalid bit patterns; the kernel writes every
        // element of `out` and of `tmp` before it reads it.
        let (tmp, out) = unsafe { (stream.alloc::<f32>(len), stream.alloc::<f32>(len)) };
        let (tmp, out) = (tmp.map_err(cuda_err)?, out.map_err(cuda_err)?);
        let f = function(&self.dev, &AUGMENT, "augment_views")?;
        let (hi, wi, ci) = (h as i32, w as i32, c as i32);
        let has_norm = i32::from(cfg.normalize.is_some());
        let mut b = stream.launch_builder(&f);
        b.arg(&self.pixels)
            .arg(&hi)
            .arg(&wi)
            .arg(&ci)
            .arg(&vi)
            .arg(&vf)
            .arg(&has_norm)
            .arg(&mp)
            .arg(&sp)
            .arg(&tmp)
            .arg(&out);
        let cfg = LaunchConfig {
            grid_dim: (views as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match augment_views's signature; every
        // view addresses pixels inside the table (checked above), and tmp
        // and out hold `views` images of the table's shape.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, self.dev.clone()));
        Ok(Tensor::from_storage(
            storage,
            (views, c, h, w),
            BackpropOp::none(),
            false,
        ))
    }
}
