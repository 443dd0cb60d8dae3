//! With the feature `cuda`: compiles our GPU kernels (`src/cuda/*.cu`) with
//! nvcc at build time, as candle-kernels compiles candle's, so that a run
//! starts without compiling them. Each source becomes PTX (`NAME.ptx`, whose
//! entry points `cuda::check_kernel_list` reads) and a fatbin (`NAME.fatbin`,
//! which the backbone loads): machine code for the GPU generation
//! `CUDA_COMPUTE_CAP` names (the variable candle-kernels reads; without it,
//! nvcc's default generation) and the PTX, which the driver compiles for a
//! newer GPU. Without the feature this does nothing, so the CPU build needs
//! no CUDA toolkit.
//!
//! nvcc is `NVCC`, else `CUDA_ROOT/bin/nvcc`, else `nvcc` on `PATH`
//! (`scripts/build-cuda.sh` puts its own there).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sources and their own nvcc flags. `augment.cu` is compiled without
/// fused multiply-adds, so that its views are the CPU's bit for bit.
const SOURCES: [(&str, &[&str]); 2] = [("kernels", &[]), ("augment", &["--fmad=false"])];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["CUDA_COMPUTE_CAP", "NVCC", "CUDA_ROOT"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc();
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .filter(|c| !c.is_empty());
    if let Some(c) = &cap
        && !c.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        fail(&format!(
            "CUDA_COMPUTE_CAP is a GPU generation such as 90 or 90a, not {c:?}"
        ));
    }
    for (name, flags) in SOURCES {
        let source = Path::new("src/cuda").join(format!("{name}.cu"));
        println!("cargo::rerun-if-changed={}", source.display());
        let ptx = out.join(format!("{name}.ptx"));
        let mut to_ptx = Command::new(&nvcc);
        to_ptx.arg("--ptx").args(flags);
        if let Some(c) = &cap {
            to_ptx.arg(format!("-arch=compute_{c}"));
        }
        run(to_ptx.arg("-o").arg(&ptx).arg(&source), &source);
        let mut to_fatbin = Command::new(&nvcc);
        to_fatbin.arg("--fatbin");
        if let Some(c) = &cap {
            to_fatbin.arg(format!(
                "-gencode=arch=compute_{c},code=[sm_{c},compute_{c}]"
            ));
        }
        let fatbin = out.join(format!("{name}.fatbin"));
        run(to_fatbin.arg("-o").arg(&fatbin).arg(&ptx), &source);
    }
}

fn nvcc() -> PathBuf {
    if let Some(n) = std::env::var_os("NVCC") {
        return n.into();
    }
    if let Some(root) = std::env::var_os("CUDA_ROOT") {
        let n = Path::new(&root).join("bin/nvcc");
        if n.exists() {
            return n;
        }
    }
    "nvcc".into()
}

fn run(cmd: &mut Command, source: &Path) {
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "nvcc failed on {} ({}):\n{}{}",
            source.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(&format!(
            "cannot run {:?} for {} ({e}): the feature cuda needs nvcc \
             (scripts/build-cuda.sh provides one)",
            cmd.get_program(),
            source.display()
        )),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("tsimcne-model build: {msg}");
    std::process::exit(1);
}
