#!/usr/bin/env bash
# Training on a GPU: our CUDA build beside PyTorch on the same GPU, in one
# run, with the ratios. For a machine with an NVIDIA GPU and python3 with
# torch and torchvision (numpy for the image archive).
#
# Usage: bench/gpu.sh [ROUNDS]     (ROUNDS: fresh processes per case, default 1; the best is kept)
#
# resnet18 on 32x32x3 images at batch 512 and 1024 (1,024 and 2,048 views):
#   step   the t-SimCNE training step alone, on one batch already on the GPU:
#          forward, Cauchy InfoNCE, backward, SGD (clip, weight decay,
#          momentum), the loss read back every step (the NaN check). Ours:
#          examples/bench_train.rs, PyTorch: bench/train_torch.py, both
#          `step resnet18 VIEWS --device cuda`. Shown per epoch of IMAGES
#          images: step seconds x floor(IMAGES / batch).
#   epoch  whole pretraining epochs on IMAGES (60,000) random images,
#          the CPU augmentation of two views per image included. Ours:
#          `pretrain --device cuda` (its log.csv seconds), PyTorch:
#          `train_torch.py epoch` (torchvision transforms in a DataLoader of
#          THREADS worker processes). The best epoch after the first.
# plus the peak GPU memory of each process (nvidia-smi, sampled every 0.2 s;
# it includes the CUDA context).
#
# Environment: BIN (our CUDA binaries; default target/cuda/release, built by
# scripts/build-cuda.sh when missing), DEVICE (cuda), THREADS (augmentation
# threads and DataLoader workers; default all cores), EPOCHS (3), IMAGES
# (60000), BATCHES ("512 1024"), CASES ("step epoch"), PRESET (resnet18;
# `small` for a quick try of the script), PYTHON (python3), BENCH_DIR
# (target/bench).
#
# The CUDA libraries come from target/cuda/cuda-env.sh when the build made
# one, else from PyTorch's wheels (site-packages/nvidia/cu13/lib).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
bin=${BIN:-target/cuda/release}
device=${DEVICE:-cuda}
threads=${THREADS:-$(nproc)}
epochs=${EPOCHS:-3}
images=${IMAGES:-60000}
batches=${BATCHES:-512 1024}
cases=${CASES:-step epoch}
preset=${PRESET:-resnet18}
python=${PYTHON:-python3}
work=${BENCH_DIR:-target/bench}/gpu
rm -rf "$work" && mkdir -p "$work"

if [ ! -x "$bin/pretrain" ] || [ ! -x "$bin/examples/bench_train" ]; then
  echo "gpu.sh: no CUDA build in $bin; building it (scripts/build-cuda.sh)" >&2
  scripts/build-cuda.sh
fi
if [ -f "$bin/../cuda-env.sh" ] && [ -z "${TSIMCNE_USE_TORCH_LIBS:-}" ]; then
  # shellcheck disable=SC1091
  . "$bin/../cuda-env.sh"
else
  libs=$("$python" -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(os.path.join(p, "cu13", "lib") + ":" + os.path.join(p, "cudnn", "lib"))')
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if ldd "$bin/pretrain" | grep -q "not found"; then
  ldd "$bin/pretrain" | grep "not found" >&2
  echo "gpu.sh: libraries missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# Runs "$@" (stdout appended to FILE) while sampling the GPU's memory in use;
# appends `peak_gpu_used_mib N` to FILE.
sampled() { # FILE CMD...
  local file=$1; shift
  local log=$work/smi.$$ pid=
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$log" 2>/dev/null &
    pid=$!
  fi
  "$@" >>"$file" || echo "gpu.sh: failed ($?): $*" >&2
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "peak_gpu_used_mib $(sort -n "$log" | tail -1)" >>"$file"
  fi
}

steps_per_epoch() { echo $((images / $1)); }

if [[ " $cases " == *" step "* ]]; then
  for b in $batches; do
    for _ in $(seq "$rounds"); do
      sampled "$work/step_$b.ours" "$bin/examples/bench_train" step "$preset" $((2 * b)) --device "$device"
      THREADS=$threads sampled "$work/step_$b.torch" "$python" bench/train_torch.py step "$preset" $((2 * b)) --device "$device"
    done
  done
fi

if [[ " $cases " == *" epoch "* ]]; then
  archive=$work/random-images.tar.gz
  "$python" bench/make_cifar_like.py "$archive" $((images / 6)) >/dev/null
  "$bin/prep" cifar10 --input "$archive" --no-verify --out "$work/images.parquet" 2>/dev/null
  for b in $batches; do
    for _ in $(seq "$rounds"); do
      out=$work/pretrain_$b
      sampled "$work/epoch_$b.ours" "$bin/pretrain" --images "$work/images.parquet" --out "$out" \
        --backbone "$preset" --epochs "$epochs" --batch-size "$b" --device "$device" \
        --threads "$threads" --checkpoint-every "$epochs" --restart
      # The best epoch after the first, as train_torch.py reports it.
      [ -f "$out/log.csv" ] && awk -F, -v k="epoch_${preset}_$b" 'NR > 2 && (best == "" || $4 < best) { best = $4 }
        END { if (best != "") print k, best }' "$out/log.csv" >>"$work/epoch_$b.ours"
      THREADS=$threads WORKERS=$threads sampled "$work/epoch_$b.torch" \
        "$python" bench/train_torch.py epoch "$preset" "$b" "$images" "$epochs" --device "$device"
    done
  done
fi

"$python" - "$work" "$images" "$preset" <<'PY'
import collections, pathlib, sys
work, images, preset = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def best(path):
    vals = collections.defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                try:
                    vals[parts[0]].append(float(parts[1]))
                except ValueError:
                    pass
    return {k: (max(v) if k.startswith("peak") else min(v)) for k, v in vals.items()}
print(f"{f'case ({preset}, 32x32x3)':34}{'ours s/epoch':>14}{'torch s/epoch':>15}{'ratio':>8}{'ours GPU MiB':>14}{'torch GPU MiB':>15}")
for f in sorted(work.glob("*.ours"), key=lambda p: (p.stem.split("_")[0] != "step", int(p.stem.split("_")[1]))):
    kind, batch = f.stem.split("_")
    batch = int(batch)
    o, t = best(f), best(f.with_suffix(".torch"))
    key = f"step_{preset}_{2 * batch}" if kind == "step" else f"epoch_{preset}_{batch}"
    scale = images // batch if kind == "step" else 1
    if key not in o:
        print(f"{kind} batch {batch}: no result from ours (see {f})")
        continue
    ours = o[key] * scale
    torch = t.get(key, float("nan")) * scale
    label = f"{'step only' if kind == 'step' else 'whole epoch'}, batch {batch}"
    mem = lambda d: f"{d['peak_gpu_used_mib']:.0f}" if "peak_gpu_used_mib" in d else "-"
    print(f"{label:34}{ours:14.2f}{torch:15.2f}{ours / torch:8.2f}{mem(o):>14}{mem(t):>15}")
print(f"(step only: one step's median x {images} // batch steps; whole epoch: {images} images with augmentation, best epoch after the first)")
PY
