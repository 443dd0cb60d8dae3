//! The t-SimCNE network in candle.
//!
//! - [`preset`]: named architectures (`resnet18`, `small`, `tiny`);
//! - [`init`]: the reference initialisation, drawn from our seeded streams;
//! - [`resnet`]: the modules (`ModuleT`: train and eval mode);
//! - [`fast`]: the same backbone on our CPU kernels, with its own backward
//!   pass (the default on the CPU, see [`Kernels`]);
//! - `cuda` (feature `cuda`): the same backbone on a GPU, cuDNN
//!   convolutions and our batch-norm kernels, with its own backward pass;
//! - [`Objective`]: what a training step minimises, as a candle graph and,
//!   for the CPU's fast path, on host rows with the head's own kernels;
//! - [`Model`]: a network with its variables, safetensors load and save under
//!   the reference PyTorch names;
//! - [`DeviceSpec`]: `cpu`, `cuda` or `cuda:N` (CUDA with the `cuda` feature);
//! - [`FastDiv`]: division by multiply and shift, the GPU kernels' index
//!   arithmetic, checked on the CPU.

#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
mod error;
pub mod fast;
mod fastdiv;
pub mod init;
mod model;
mod objective;
pub mod preset;
pub mod resnet;

pub use device::{CUDA_BUILT, DeviceSpec};
pub use error::{ModelError, Result};
pub use fast::Acts;
pub use fastdiv::FastDiv;
pub use model::{
    Backprop, BnSums, ConvMath, ConvSearch, GpuLoss, Kernels, MemoryFormat, Model, infer_arch,
};
pub use objective::{HostObjective, KernelLoss, Objective};
pub use preset::{PRESETS, check_input, preset};
pub use tsimcne_format::model_keys::ResNetArch;
