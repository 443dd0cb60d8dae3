#!/usr/bin/env bash
# Builds the CUDA binaries (`--device cuda`) on a Debian/Ubuntu x86-64
# machine that has no CUDA toolkit: nvcc, the CUDA headers and libraries
# come from NVIDIA's PyPI wheels in a private virtual environment; a GPU is
# not needed to build.
#
#   scripts/build-cuda.sh               build target/cuda/release/tsimcne (linked as prep, pretrain, ...)
#                                       and target/cuda/release/examples/bench_train
#   scripts/build-cuda.sh tests         build the GPU tests (release profile) and copy them to
#                                       target/cuda/release/tests/PACKAGE-TEST, for scripts/pack-cuda.sh
#   scripts/build-cuda.sh COMMAND...    run COMMAND in the same build environment, e.g.
#       scripts/build-cuda.sh cargo test --release -p tsimcne-cli --features cuda --test cuda --no-run
#
# Environment (all optional):
#   CUDA_COMPUTE_CAP  GPU architecture of candle's kernels: 90 (H100, H200; the default),
#                     80 (A100), 89 (L4, RTX 40xx), 120 (RTX 50xx), ...
#   CUDA_FEATURES     cargo feature of tsimcne-cli: cuda (default; our GPU backbone on cuDNN
#                     beside candle's CUDA ops) or cudnn (also candle's own cuDNN convolutions)
#   CUDA_VENV         the virtual environment [target/cuda-venv]
#   CARGO_TARGET_DIR  [target/cuda], apart from the CPU build in target/
#   PYTHON            the interpreter that makes the environment [python3]
#
# What it does: pip-installs CUDA 13.0 (nvcc, cudart, cuBLAS, cuRAND, NVRTC)
# and cuDNN 9 into CUDA_VENV; adds the unversioned
# library names the linker wants and a link-time stub of the driver library
# (libcuda.so, whose functions all return CUDA_ERROR_STUB_LIBRARY; the real
# one comes with the NVIDIA driver); puts nvcc on PATH, sets CUDA_ROOT
# (cudarc's link search) and CUDA_COMPUTE_CAP (candle-kernels); then builds.
# CUDA 13.0 and not newer: candle loads its kernels as PTX, which a driver
# only compiles up to its own CUDA version (driver 580 = CUDA 13.0).
#
# Running the binaries needs the NVIDIA driver (its libcuda.so.1 is linked:
# the CUDA build does not start on a machine without one) and the CUDA 13
# libraries, which the binaries find in this environment (a run path); to
# use others, e.g. PyTorch's CUDA 13 wheels (site-packages/nvidia/cu13/lib)
# after copying the binaries, put them on LD_LIBRARY_PATH, which wins.
# target/cuda/cuda-env.sh (written below) sets LD_LIBRARY_PATH to this
# environment's.
#
# Needs: python3 with venv (apt-get install python3-venv), g++ (nvcc's host
# compiler; apt-get install g++), cargo. Downloads about 1.5 GB of wheels once.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

die() { echo "build-cuda: $*" >&2; exit 1; }

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "needs Linux on x86-64 (NVIDIA's wheels), not $(uname -s)-$(uname -m)"
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found (apt-get install python3 python3-venv)"
command -v g++ >/dev/null || die "g++ not found: nvcc needs a host compiler (apt-get install g++)"
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"

features=${CUDA_FEATURES:-cuda}
case $features in cuda | cudnn) ;; *) die "CUDA_FEATURES is cuda or cudnn, not $features" ;; esac
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/cuda}
venv=${CUDA_VENV:-$repo/target/cuda-venv}

# CUDA 13.0 Update 2, the versions of the cuda-toolkit==13.0.2 meta-package,
# each pinned (nvcc alone would pull the newest crt and nvvm).
packages=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.21.1.3
)

if [ ! -x "$venv/bin/python" ]; then
  echo "build-cuda: making $venv"
  "$python" -m venv "$venv" || die "cannot make a virtual environment (apt-get install python3-venv)"
fi
stamp=$venv/.tsimcne-cuda-packages
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "build-cuda: installing ${packages[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}"
  printf '%s\n' "${packages[*]}" >"$stamp"
fi

# The wheels unpack into site-packages/nvidia/cu13/{bin,include,lib,nvvm}:
# a toolkit root as nvcc expects it (cuDNN into nvidia/cudnn/).
nvidia=$("$venv/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')
root=$nvidia/cu13
[ -x "$root/bin/nvcc" ] || die "no nvcc in $root/bin"

# Unversioned names for the linker (-lcublas, ...), as a toolkit has them.
libs=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13)
for lib in "${libs[@]}"; do
  [ -e "$root/lib/$lib" ] || die "$root/lib/$lib is missing"
  ln -sfn "$lib" "$root/lib/${lib%%.so.*}.so"
done
[ -e "$nvidia/cudnn/lib/libcudnn.so.9" ] || die "$nvidia/cudnn/lib/libcudnn.so.9 is missing"
ln -sfn "$nvidia/cudnn/lib/libcudnn.so.9" "$root/lib/libcudnn.so"

# The driver library is part of the driver, not of the wheels: link against
# a stub with every function of cuda.h (each returns 34,
# CUDA_ERROR_STUB_LIBRARY). Only the name libcuda.so.1 is recorded in the
# binaries; the driver's library is found at run time.
stub=$root/lib/stubs/libcuda.so
if [ ! -e "$stub" ] || [ "$root/include/cuda.h" -nt "$stub" ]; then
  mkdir -p "$root/lib/stubs"
  tmp=$(mktemp -d)
  gcc -E -P -I"$root/include" "$root/include/cuda.h" |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u |
    sed 's/.*/int &(void) { return 34; }/' >"$tmp/stub.c"
  [ "$(wc -l <"$tmp/stub.c")" -gt 100 ] || die "found too few functions in $root/include/cuda.h"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$tmp/stub.c"
  rm -rf "$tmp"
fi

export PATH=$root/bin:$PATH
export CUDA_ROOT=$root
unset CUDA_HOME CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB NVCC

# Where the binaries look for the CUDA libraries (after LD_LIBRARY_PATH);
# the driver's libcuda.so.1 is on the system's library path.
runtime_path=$root/lib:$nvidia/cudnn/lib
case $runtime_path in *[[:space:]]*) die "the path $runtime_path has white space, which RUSTFLAGS cannot carry" ;; esac
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-Wl,--enable-new-dtags,-rpath,$runtime_path"
mkdir -p "$CARGO_TARGET_DIR"
cat >"$CARGO_TARGET_DIR/cuda-env.sh" <<EOF
# source me: the CUDA libraries of $venv for the binaries in $CARGO_TARGET_DIR
export LD_LIBRARY_PATH=$runtime_path\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
EOF

echo "build-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, features $features, into $CARGO_TARGET_DIR"
if [ "${1:-}" = tests ]; then
  # The GPU tests: each package's CUDA test against the CPU.
  mkdir -p "$CARGO_TARGET_DIR/release/tests"
  for spec in tsimcne-model:cuda_fast tsimcne-train:cuda tsimcne-cli:cuda; do
    cargo test --release --no-run --message-format=json -p "${spec%%:*}" --test "${spec#*:}" \
      --features "$features"
  done |
    "$python" -c '
import json, shutil, sys
dest = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        pkg = m["package_id"].split("#")[0].rstrip("/").split("/")[-1].split("@")[0]
        name = pkg + "-" + m["target"]["name"]
        shutil.copy2(m["executable"], dest + "/" + name)
        print("build-cuda: test", dest + "/" + name)
' "$CARGO_TARGET_DIR/release/tests"
  exit
fi
if [ $# -gt 0 ]; then
  exec "$@"
fi
cargo build --release -p tsimcne-cli -p tsimcne-train \
  --features "tsimcne-cli/$features,tsimcne-train/$features" --bins --example bench_train
# --link-stages runs the binary, which loads libcuda.so.1 at start; where
# there is no driver the stub stands in (linking the stages calls no CUDA).
# Its own directory, outside the binaries' run path, so that the stub never
# shadows a real driver when they run.
mkdir -p "$root/lib/stubs-run" && ln -sf "$stub" "$root/lib/stubs-run/libcuda.so.1"
LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$root/lib/stubs-run \
  "$CARGO_TARGET_DIR/release/tsimcne" --link-stages "$CARGO_TARGET_DIR/release"
echo "build-cuda: built $CARGO_TARGET_DIR/release/tsimcne (linked as each stage) and examples/bench_train"
echo "build-cuda: to run them: source $CARGO_TARGET_DIR/cuda-env.sh"
