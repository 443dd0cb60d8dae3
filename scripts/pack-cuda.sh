#!/usr/bin/env bash
# Packs the CUDA build (scripts/build-cuda.sh) small enough to carry to a GPU
# machine that cannot build it (no internet for the CUDA wheels): the
# binaries stripped of their debug information in one xz-compressed tar,
# which shares their common code (about 15 MB for all of them).
#
#   scripts/pack-cuda.sh [BINARY...]
#       default: tsimcne (with its links named after the stages),
#       examples/bench_train, and every test executable in tests/ (put there
#       by `scripts/build-cuda.sh tests`)
#       → target/cuda-pack/tsimcne-cuda.tar.xz (paths relative to target/cuda/release)
#
# On the GPU machine, with the pack copied to the same place:
#   mkdir -p target/cuda/release && tar -xJf target/cuda-pack/tsimcne-cuda.tar.xz -C target/cuda/release
# and the CUDA 13 and cuDNN 9 libraries on LD_LIBRARY_PATH (bench/gpu.sh
# finds PyTorch's: site-packages/nvidia/{cu13,cudnn}/lib).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${CARGO_TARGET_DIR:-$repo/target/cuda}/release
pack=$repo/target/cuda-pack
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(tsimcne examples/bench_train)
  if [ -d "$build/tests" ]; then
    for t in "$build"/tests/*; do
      [ -x "$t" ] && names+=("tests/$(basename "$t")")
    done
  fi
fi
command -v strip >/dev/null || { echo "pack-cuda: strip not found (apt-get install binutils)" >&2; exit 1; }
command -v xz >/dev/null || { echo "pack-cuda: xz not found (apt-get install xz-utils)" >&2; exit 1; }
mkdir -p "$pack"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for name in "${names[@]}"; do
  src=$build/$name
  [ -x "$src" ] || { echo "pack-cuda: $src is missing: run scripts/build-cuda.sh first" >&2; exit 1; }
  mkdir -p "$stage/$(dirname "$name")"
  strip -o "$stage/$name" "$src"
done
# The stages' names, as links to the executable beside them.
# Running tsimcne loads libcuda.so.1; where there is no driver, the stub
# that scripts/build-cuda.sh made stands in (linking calls no CUDA).
stubs=$(ls -d "${CUDA_VENV:-$repo/target/cuda-venv}"/lib/python3*/site-packages/nvidia/cu13/lib/stubs-run 2>/dev/null | head -1)
if [ -f "$stage/tsimcne" ]; then
  LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$stubs "$build/tsimcne" --link-stages "$stage"
  names+=($(cd "$stage" && find . -maxdepth 1 -type l -printf '%f\n'))
fi
tar -C "$stage" -cf - "${names[@]}" | xz -T0 -9 -c >"$pack/.tsimcne-cuda.tar.xz.tmp"
mv -f "$pack/.tsimcne-cuda.tar.xz.tmp" "$pack/tsimcne-cuda.tar.xz"
echo "pack-cuda: $pack/tsimcne-cuda.tar.xz ($(($(stat -c %s "$pack/tsimcne-cuda.tar.xz") / 1024 / 1024)) MiB: ${names[*]})"
