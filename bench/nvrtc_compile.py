#!/usr/bin/env python3
"""What starting a GPU run cost before our kernels were compiled at build time.

Until then every process compiled kernels.cu and augment.cu with NVRTC (the
CUDA C++ to PTX step) when it opened the GPU, and the driver compiled that
PTX to machine code (ptxas, cached per machine by the driver). This times
both on the CPU, as the old start did: NVRTC through its C API with the
options the old code used, and ptxas for sm_90 on the PTX it made. No GPU
is needed. The build now does both (crates/tsimcne-model/build.rs).

Usage: bench/nvrtc_compile.py [CUDA_ROOT]
  CUDA_ROOT: the CUDA 13 toolkit root (default: scripts/build-cuda.sh's,
  target/cuda-venv/lib/python3*/site-packages/nvidia/cu13), with
  lib/libnvrtc.so.13 and bin/ptxas.
"""
import ctypes
import glob
import os
import pathlib
import subprocess
import sys
import tempfile
import time

repo = pathlib.Path(__file__).resolve().parent.parent
if len(sys.argv) > 1:
    root = pathlib.Path(sys.argv[1])
else:
    found = glob.glob(str(repo / "target/cuda-venv/lib/python3*/site-packages/nvidia/cu13"))
    if not found:
        sys.exit("nvrtc_compile.py: no CUDA toolkit: run scripts/build-cuda.sh, or name CUDA_ROOT")
    root = pathlib.Path(found[0])
lib = root / "lib" / "libnvrtc.so.13"
if not lib.exists():
    sys.exit(f"nvrtc_compile.py: {lib} is missing")
# NVRTC loads its builtins library from the same folder by name.
os.environ["LD_LIBRARY_PATH"] = f"{root / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
if os.environ.get("NVRTC_COMPILE_CHILD") != "1":
    os.environ["NVRTC_COMPILE_CHILD"] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv[:1], str(root)])
nvrtc = ctypes.CDLL(str(lib))
src_dir = repo / "crates/tsimcne-model/src/cuda"
REPEATS = 3


def compile_ptx(name, text, opts):
    prog = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), text, name.encode(), 0, None, None):
        sys.exit(f"nvrtc_compile.py: nvrtcCreateProgram failed on {name}")
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    if rc:
        sys.exit(f"nvrtc_compile.py: NVRTC failed on {name} (error {rc})")
    return ptx.value


total_nvrtc = total_ptxas = 0.0
# The old code's options: none for the backbone, no fused multiply-adds for
# the augmentation.
for name, opts in [("kernels.cu", []), ("augment.cu", [b"--fmad=false"])]:
    text = (src_dir / name).read_bytes()
    times, ptx = [], b""
    for _ in range(REPEATS):
        t = time.perf_counter()
        ptx = compile_ptx(name, text, opts)
        times.append(time.perf_counter() - t)
    nvrtc_s = min(times)
    ptxas_s = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        p = pathlib.Path(tmp, "k.ptx")
        p.write_bytes(ptx)
        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            subprocess.run([str(root / "bin/ptxas"), "-arch=sm_90", "-o", str(p.with_suffix(".cubin")), str(p)], check=True)
            times.append(time.perf_counter() - t)
        ptxas_s = min(times)
    total_nvrtc += nvrtc_s
    total_ptxas += ptxas_s
    print(f"{name:12} NVRTC {nvrtc_s:.3f} s, ptxas sm_90 {ptxas_s:.3f} s (best of {REPEATS}; PTX {len(ptx)} bytes)")
print(f"{'both':12} NVRTC {total_nvrtc:.3f} s (every process, before), ptxas {total_ptxas:.3f} s (the driver's, first process on a machine)")
