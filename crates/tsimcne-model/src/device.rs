//! Where a model runs: the CPU, or a CUDA GPU in a build with the `cuda`
//! feature. Parsed from `cpu`, `cuda` (the first GPU) or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{ModelError, Result};

/// A device by name, before it is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

/// Whether this build can run on CUDA GPUs (the `cuda` cargo feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceSpec {
    pub fn is_cpu(self) -> bool {
        self == DeviceSpec::Cpu
    }

    /// Opens the device. A CUDA device in a build without the `cuda`
    /// feature, or one that cannot be opened (no driver, no GPU, no GPU of
    /// that ordinal), is an error of one line that says so. A GPU keeps the
    /// memory a run frees for its next allocations
    /// (`cuda::FreedMemory::Keep`, where the driver allows it).
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(_) if !CUDA_BUILT => Err(ModelError::Invalid(format!(
                "device {self}: this build has no CUDA support; build the binaries with \
                 scripts/build-cuda.sh (cargo feature `cuda`)"
            ))),
            DeviceSpec::Cuda(n) => {
                let device = Device::new_cuda(n).map_err(|e| {
                    // candle's error may carry a backtrace on later lines.
                    let detail = e.to_string();
                    let detail = detail.lines().next().unwrap_or("").trim().to_string();
                    ModelError::Invalid(format!("device {self}: no usable CUDA device: {detail}"))
                })?;
                // Speed only: a driver that refuses the setting trains as
                // before, so the device opens either way (cuda_fast.rs checks
                // that it takes effect on a GPU).
                #[cfg(feature = "cuda")]
                let _ = crate::cuda::set_freed_memory(&device, crate::cuda::FreedMemory::Keep);
                // Speed only, as above: no unused events with each
                // allocation (a fresh device runs one stream, so this holds).
                #[cfg(feature = "cuda")]
                let _ = crate::cuda::set_allocation_events(
                    &device,
                    crate::cuda::AllocationEvents::None,
                );
                Ok(device)
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda or cuda:N)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_device_names() {
        for (s, d, back) in [
            ("cpu", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:0", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:3", DeviceSpec::Cuda(3), "cuda:3"),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
            assert_eq!(d.to_string(), back);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda0", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_one_line_error() {
        let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("no CUDA support"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
