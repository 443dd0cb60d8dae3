#!/usr/bin/env bash
# Packs the CUDA build (scripts/build-cuda.sh) small enough to carry to a GPU
# machine that cannot build it (no internet for the CUDA wheels): the
# binaries stripped of their debug information and xz-compressed, about 9 MB
# each instead of 200.
#
#   scripts/pack-cuda.sh [BINARY...]    default: prep pretrain project finetune embed evaluate bench_train
#       → target/cuda-pack/{BINARY.xz, unpack.sh}   (about 55 MiB for all; bench/gpu.sh needs
#         prep, pretrain and bench_train: about 20 MiB)
#
# On the GPU machine, with the pack copied to the same place:
#   target/cuda-pack/unpack.sh          → target/cuda-pack/bin/BINARY (bench_train in bin/examples/,
#                                         the layout of target/cuda/release: BIN=target/cuda-pack/bin bench/gpu.sh)
# unpack.sh also prints the LD_LIBRARY_PATH that finds the CUDA 13 libraries,
# found in the PyTorch wheels of the python3 there
# (site-packages/nvidia/cu13/lib).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${CARGO_TARGET_DIR:-$repo/target/cuda}/release
pack=$repo/target/cuda-pack
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(prep pretrain project finetune embed evaluate bench_train)
command -v strip >/dev/null || { echo "pack-cuda: strip not found (apt-get install binutils)" >&2; exit 1; }
command -v xz >/dev/null || { echo "pack-cuda: xz not found (apt-get install xz-utils)" >&2; exit 1; }
mkdir -p "$pack"
rm -rf "$pack/bin" # an unpacked copy would be carried too
for name in "${names[@]}"; do
  src=$build/$name
  [ "$name" = bench_train ] && src=$build/examples/bench_train
  [ -x "$src" ] || { echo "pack-cuda: $src is missing: run scripts/build-cuda.sh first" >&2; exit 1; }
  tmp=$pack/.$name.tmp
  strip -o "$tmp" "$src"
  xz -T0 -6 -c "$tmp" >"$tmp.xz"
  rm -f "$tmp"
  mv -f "$tmp.xz" "$pack/$name.xz"
  echo "pack-cuda: $pack/$name.xz ($(($(stat -c %s "$pack/$name.xz") / 1024 / 1024)) MiB)"
done
cat >"$pack/unpack.sh" <<'EOF'
#!/usr/bin/env bash
# Unpacks the binaries beside this script into bin/ and prints the
# LD_LIBRARY_PATH that finds the CUDA 13 libraries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/bin"
for f in "$here"/*.xz; do
  name=$(basename "$f" .xz)
  dir=$here/bin
  [ "$name" = bench_train ] && dir=$here/bin/examples && mkdir -p "$dir"
  xz -dc "$f" >"$dir/.$name.tmp" && chmod +x "$dir/.$name.tmp" && mv -f "$dir/.$name.tmp" "$dir/$name"
done
lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
if [ -n "$lib" ] && [ -d "$lib" ]; then
  echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
else
  echo "unpack: no nvidia/cu13 wheels found by python3; point LD_LIBRARY_PATH at the CUDA 13 libraries" >&2
fi
EOF
chmod +x "$pack/unpack.sh"
echo "pack-cuda: carry target/cuda-pack; there, run target/cuda-pack/unpack.sh"
