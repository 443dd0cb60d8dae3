#!/usr/bin/env bash
# The whole GPU check in one run (about 8 minutes on an H200): our CUDA
# build's tests against the CPU, its training step and epoch beside
# PyTorch's on the same GPU, and the demo pipeline. For a machine with an
# NVIDIA GPU and python3 with torch and torchvision (numpy for the archive).
#
# Usage: bench/gpu.sh            (CASES picks the parts and their order)
#
#   tests  every GPU test executable in BIN/tests (scripts/build-cuda.sh tests)
#          with TSIMCNE_TEST_CUDA=1: each kernel of our GPU backbone against
#          the CPU path, training steps of each GPU path against the CPU, the
#          stages on the GPU against the CPU.
#   step   resnet18 on 32x32x3 images at batch 512 and 1024 (1,024 and 2,048
#          views): the training step alone on one batch already on the GPU
#          (forward, Cauchy InfoNCE, backward, SGD, the loss read back every
#          step). Ours: examples/bench_train.rs in each of STEP_FORMS: candle's
#          kernels (the old path), ours in f32 and ours with TF32 convolutions,
#          and those with the forms not yet run on a GPU: the batch-norm
#          kernels split over many blocks a channel (-split, BnSums::Split),
#          the SGD step in one kernel launch (-sgd, GpuStep::Fused), bf16
#          activations and convolutions (-bf16, ConvMath::Bf16), channels-last
#          activations (-nhwc, MemoryFormat::Nhwc); PyTorch:
#          bench/train_torch.py in f32 eager with cudnn.benchmark, bf16 +
#          channels_last, and torch.compile of that. Shown per epoch of
#          IMAGES images: step seconds x floor(IMAGES / batch). -timed: each
#          convolution's algorithms chosen by timing them, as cudnn.benchmark
#          (ConvSearch::Timed). Then the demo's step (the small preset on
#          14x14x1 images, batch 256: 512 views) in each of DEMO_STEP_FORMS
#          (default: candle fast fast-split-sgd fast-split-sgd-loss
#          fast-split-sgd-loss-events; -loss: the loss in our kernels,
#          GpuLoss::Kernels; -events: cudarc's two CUDA events made with each
#          allocation, as before DeviceSpec::open turned them off, what that
#          saved), shown per epoch of the
#          demo's 10,000 images. On a GPU each step form also reports the
#          time until its work was queued (bench_train's enqueue_): near the
#          step's time, the step waits on the CPU's launches, not the GPU.
#   profile  where the step's time goes, at the first of BATCHES, for each
#          of PROFILE_FORMS (default: fast-tf32, and the fastest-looking
#          forms not yet run, fast-bf16-split-sgd-timed and
#          fast-bf16-nhwc-sgd-timed):
#          `bench_train profile`, each convolution and batch-norm phase of
#          our GPU backbone timed between two synchronisations, with its
#          shape and cuDNN algorithm, then the SGD step and the rest (head,
#          loss); the whole listing in BENCH_DIR/gpu/profile_*.log.
#   epoch  whole pretraining epochs on IMAGES random images, the CPU
#          augmentation of two views per image included. Ours: `pretrain
#          --device cuda` (its log.csv seconds; the default TF32
#          convolutions), with `--gpu-path tested`
#          (ours-fast) and `--gpu-path next` (ours-next: split batch-norm
#          sums, fused SGD, augmentation on the GPU), PyTorch: `train_torch.py
#          epoch` (torchvision transforms in a DataLoader of THREADS worker
#          processes). The best epoch after the first.
#   demo   `make demo DEVICE=cuda` (the 10k Fashion-MNIST demo) with its
#          wall time and kNN accuracy, for each of DEMO_FORMS,
#          PATH[-MATH][+VAR=VALUE...] (GPU_PATH and CONV_MATH, then any make
#          variables; default: next, the default TF32 with the newer kernels;
#          next+DEMO_BATCH=1024+DEMO_FINETUNE_LR=0.12, a quarter of the steps
#          (pretraining's rate scales with the batch; fine-tuning's as the
#          budget study measured it on the CPU: -0.005 kNN), whether a bigger
#          batch buys the demo's time on a GPU, whose small steps wait on
#          launches; and next-bf16, bf16 channels-last: whether bf16's map is
#          as good. next-exact: exact f32).
# Each command runs under its own time cap (CAP seconds, default 150; the
# demo twice that), so one slow command cannot eat the others. BUDGET
# (seconds, default 0: none) bounds the whole run: each command's cap is
# cut to what is left of it (less 20 s for the summary), a command that
# would get under 10 s is skipped (shown as skipped), and the summary is
# printed within BUDGET, so a run under an outer time limit still reports.
# The peak GPU memory of each process comes from nvidia-smi, sampled every
# 0.2 s (it includes the CUDA context).
#
# Environment: BIN (our CUDA binaries; default target/cuda/release, from
# scripts/build-cuda.sh or unpacked from scripts/pack-cuda.sh's tar),
# DEVICE (cuda; cpu runs the cases on the CPU build, as tests/gpu_script.rs
# checks the script), THREADS (default all cores), EPOCHS (2: the second is
# the one reported), IMAGES (60000),
# BATCHES ("512 1024"), CASES ("tests step profile epoch demo"), STEP_FORMS,
# PROFILE_FORMS, DEMO_STEP_FORMS and DEMO_FORMS (above), PRESET (resnet18),
# PYTHON (python3), BENCH_DIR (target/bench), CAP (150), BUDGET (0),
# COMPILE_BATCHES (the batches that time torch.compile, which compiles for
# a minute; BATCHES; empty: none).
#
# The CUDA and cuDNN libraries come from target/cuda/cuda-env.sh when the
# build made one, else from PyTorch's wheels (site-packages/nvidia/{cu13,cudnn}/lib).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/cuda/release}
device=${DEVICE:-cuda}
threads=${THREADS:-$(nproc)}
epochs=${EPOCHS:-2}
images=${IMAGES:-60000}
batches=${BATCHES:-512 1024}
cases=${CASES:-tests step profile epoch demo}
# The default forms: the old path; the tested f32 and TF32 paths and each
# with the newer kernels (--gpu-path next); bf16 in either layout (NHWC as
# --gpu-path next --conv-math bf16 runs it); TF32 channels-last; timed
# algorithm choice on the likely fastest form; and TF32 with the GPU memory
# a step frees released to the driver at each synchronisation (-release, the
# driver's default; our binaries keep it, cuda::FreedMemory).
step_forms=${STEP_FORMS:-candle fast fast-split-sgd fast-tf32 fast-tf32-release fast-tf32-split-sgd fast-tf32-nhwc-sgd fast-bf16-split-sgd fast-bf16-nhwc-sgd fast-bf16-nhwc-sgd-timed}
profile_forms=${PROFILE_FORMS:-fast-tf32 fast-bf16-split-sgd-timed fast-bf16-nhwc-sgd-timed}
demo_forms=${DEMO_FORMS:-next next+DEMO_BATCH=1024+DEMO_FINETUNE_LR=0.12 next-bf16}
demo_step_forms=${DEMO_STEP_FORMS-candle fast fast-split-sgd fast-split-sgd-loss fast-split-sgd-loss-events}
preset=${PRESET:-resnet18}
python=${PYTHON:-python3}
cap=${CAP:-150}
budget=${BUDGET:-0}
compile_batches=${COMPILE_BATCHES-$batches}
work=${BENCH_DIR:-target/bench}/gpu
for c in $cases; do
  case $c in tests | step | profile | epoch | demo) ;; *)
    echo "gpu.sh: unknown case '$c' in CASES (tests step profile epoch demo)" >&2
    exit 2
    ;;
  esac
done
[[ $budget =~ ^[0-9]+$ ]] || { echo "gpu.sh: BUDGET is seconds, not '$budget'" >&2; exit 2; }
rm -rf "$work" && mkdir -p "$work"
start_s=$SECONDS

if [ ! -x "$bin/pretrain" ] || [ ! -x "$bin/examples/bench_train" ]; then
  echo "gpu.sh: no CUDA build in $bin: run scripts/build-cuda.sh (and scripts/pack-cuda.sh to carry it)" >&2
  exit 1
fi
if [[ $device != cuda* ]]; then
  : # DEVICE=cpu: the script's own check on a machine without a GPU (tests/gpu_script.rs)
elif [ -f "$bin/../cuda-env.sh" ] && [ -z "${TSIMCNE_USE_TORCH_LIBS:-}" ]; then
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
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

# The time cap of the next command: CAP_S, cut to what BUDGET leaves of
# the run less 20 s for the summary; 0 when under 10 s would be left.
capped() { # CAP_S
  local c=$1 left
  if [ "$budget" -gt 0 ]; then
    left=$((budget - (SECONDS - start_s) - 20))
    [ "$left" -lt "$c" ] && c=$left
  fi
  [ "$c" -lt 10 ] && c=0
  echo "$c"
}

# Runs "$@" under the time cap (stdout appended to FILE) while sampling the
# GPU's memory in use; appends `peak_gpu_used_mib N` to FILE, or `skipped`
# alone where BUDGET leaves no time.
sampled() { # FILE CMD...
  local file=$1 log=$work/smi.$$ pid= rc=0 c
  shift
  c=$(capped "$cap")
  if [ "$c" -eq 0 ]; then
    echo skipped >>"$file"
    echo "gpu.sh: skipped, BUDGET spent: $*" >&2
    return 0
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$log" 2>/dev/null &
    pid=$!
  fi
  timeout "$c" "$@" >>"$file" 2>>"$file.err" || rc=$?
  [ $rc -eq 0 ] || echo "gpu.sh: failed or over ${c}s (exit $rc): $*" >&2
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "peak_gpu_used_mib $(sort -n "$log" | tail -1)" >>"$file"
  fi
  return 0
}

status=0
case_tests() {
  local t c found=
  for t in "$bin"/tests/*; do
    [ -x "$t" ] || continue
    found=1
    echo "== test $(basename "$t")"
    c=$(capped "$cap")
    if [ "$c" -eq 0 ]; then
      status=1
      echo "gpu.sh: test $(basename "$t") skipped, BUDGET spent" >&2
      continue
    fi
    if ! TSIMCNE_TEST_CUDA=1 timeout "$c" "$t" --test-threads 1 >"$work/test-$(basename "$t").log" 2>&1; then
      status=1
      tail -40 "$work/test-$(basename "$t").log"
    fi
    grep -E "^test |test result" "$work/test-$(basename "$t").log"
  done
  if [ -z "$found" ]; then
    status=1
    echo "gpu.sh: no GPU tests in $bin/tests (scripts/build-cuda.sh tests)" >&2
  fi
}

case_step() {
  local b k f
  for b in $batches; do
    for k in $step_forms; do
      sampled "$work/step_$b.ours-$k" "$bin/examples/bench_train" step "$preset" $((2 * b)) "$k" --device "$device"
    done
    for f in eager bf16 compile; do
      [ "$f" = compile ] && [[ " $compile_batches " != *" $b "* ]] && continue
      THREADS=$threads sampled "$work/step_$b.torch-$f" "$python" bench/train_torch.py step "$preset" $((2 * b)) --device "$device" --form "$f"
    done
  done
  # The demo's shapes (Makefile: DEMO_BACKBONE, DEMO_SIZE, DEMO_BATCH).
  for k in $demo_step_forms; do
    sampled "$work/demostep_256.ours-$k" "$bin/examples/bench_train" step small 512 "$k" --image 14x1 --device "$device"
  done
}

case_profile() {
  local b=${batches%% *} k f c
  for k in $profile_forms; do
    f=$work/profile_$b.ours-$k.log
    echo "== profile: batch $b ($((2 * b)) views), $k"
    c=$(capped "$cap")
    if [ "$c" -eq 0 ]; then
      echo "gpu.sh: profile $k skipped, BUDGET spent" >&2
      continue
    fi
    if timeout "$c" "$bin/examples/bench_train" profile "$preset" $((2 * b)) "$k" --device "$device" >"$f" 2>&1; then
      grep -E "^(step|rest|group)_ms" "$f"
      grep -E "^phase_ms" "$f" | head -12
    else
      status=1
      tail -20 "$f"
    fi
  done
}

case_epoch() {
  local archive b path out form
  archive=$work/random-images.tar.gz
  if [ "$(capped "$cap")" -gt 0 ]; then
    "$python" bench/make_cifar_like.py "$archive" $((images / 6)) >/dev/null
    "$bin/prep" cifar10 --input "$archive" --no-verify --out "$work/images.parquet" 2>/dev/null
  fi
  for b in $batches; do
    for path in tested next; do
      out=$work/pretrain_${b}_$path
      form=ours-fast; [ $path = next ] && form=ours-next
      sampled "$work/epoch_$b.$form" "$bin/pretrain" --images "$work/images.parquet" --out "$out" \
        --backbone "$preset" --epochs "$epochs" --batch-size "$b" --device "$device" \
        --threads "$threads" --checkpoint-every "$epochs" --restart --gpu-path $path
      # The best epoch after the first, as train_torch.py reports it.
      [ -f "$out/log.csv" ] && awk -F, -v k="epoch_${preset}_$b" 'NR > 2 && (best == "" || $4 < best) { best = $4 }
        END { if (best != "") print k, best }' "$out/log.csv" >>"$work/epoch_$b.$form"
    done
    THREADS=$threads WORKERS=$threads sampled "$work/epoch_$b.torch-eager" \
      "$python" bench/train_torch.py epoch "$preset" "$b" "$images" "$epochs" --device "$device"
  done
}

case_demo() {
  local form base path math name runs log start c s
  local -a vars
  for form in $demo_forms; do
    # PATH[-MATH], then +VAR=VALUE make variables; file names with _ for + and =.
    base=${form%%+*} vars=()
    [[ $form == *+* ]] && IFS=+ read -ra vars <<<"${form#*+}"
    path=${base%%-*} math=
    [[ $base == *-* ]] && math=${base#*-}
    name=${form//[+=]/_}
    runs=$work/runs-$name log=$work/demo-$name.log
    c=$(capped "$((2 * cap))")
    if [ "$c" -eq 0 ]; then
      echo "demo $form: skipped, BUDGET spent" >&2
      continue
    fi
    start=$(date +%s.%N)
    if timeout "$c" make --no-print-directory demo DEVICE="$device" NO_BUILD=1 BIN="$bin" \
      RUNS="$runs" GPU_PATH="$path" ${math:+CONV_MATH=$math} "${vars[@]}" >"$log" 2>&1; then
      echo "demo $form: $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s wall"
      grep -E "kNN|preservation" "$log"
      for s in pretrain project finetune; do
        [ -f "$runs/demo/$s/log.csv" ] &&
          awk -F, -v s=$s -v f="$form" 'NR > 1 { t += $4; n++ } END { printf "demo %s %s: %d epochs, %.1f s\n", f, s, n, t }' "$runs/demo/$s/log.csv"
      done
    else
      status=1
      echo "demo $form: failed or over $c s" >&2
      tail -20 "$log"
    fi
  done
}

for c in $cases; do
  "case_$c"
done

"$python" - "$work" "$images" "$preset" <<'PY'
import collections, pathlib, sys
work, images, preset = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# The kinds of result file, in the table's order; demostep: the demo's
# step, per epoch of its 10,000 images.
KINDS = {"step": 0, "demostep": 1, "epoch": 2}
DEMO_IMAGES = 10000
rows = []
for f in sorted(work.glob("*_*.*")):
    if f.suffix == ".err" or f.name.endswith(".err") or f.suffix == ".log":
        continue
    kind, rest = f.name.split("_", 1)
    if kind not in KINDS:
        continue
    batch, form = rest.split(".", 1)
    vals = collections.defaultdict(list)
    for line in f.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                vals[parts[0]].append(float(parts[1]))
            except ValueError:
                pass
    batch = int(batch)
    prefix = "epoch_" if kind == "epoch" else "step_"
    secs = [v[0] for k, v in vals.items() if k.startswith(prefix)]
    queued = [v[0] for k, v in vals.items() if k.startswith("enqueue_")]
    mem = vals.get("peak_gpu_used_mib", [float("nan")])[0]
    if not secs:
        skipped = "skipped" in f.read_text().split()
        rows.append((kind, batch, form, "skipped" if skipped else None, None, mem, None))
        continue
    s = secs[0]
    per_epoch = {"step": s * (images // batch), "demostep": s * (DEMO_IMAGES // batch)}.get(kind, s)
    rows.append((kind, batch, form, s, per_epoch, mem, queued[0] if queued else None))
rows.sort(key=lambda r: (KINDS[r[0]], r[1], r[2]))
def ref(kind, batch, pick):
    """PyTorch's s/epoch at this kind and batch: eager f32, or its best form."""
    torch = [r[4] for r in rows if r[0] == kind and r[1] == batch and r[2].startswith("torch-") and r[4]]
    eager = [r[4] for r in rows if r[0] == kind and r[1] == batch and r[2] == "torch-eager" and r[4]]
    return (eager[0] if eager else None) if pick == "eager" else (min(torch) if torch else None)

print(f"{f'({preset}, 32x32x3, {images} images)':36}{'form':>32}{'seconds':>10}{'s/epoch':>10}{'vs eager':>10}{'vs best':>10}{'GPU MiB':>10}")
table = []
LABELS = {"step": "step", "demostep": "demo step (small, 14x14x1)", "epoch": "whole epoch"}
for kind, batch, form, s, e, mem, _ in rows:
    label = f"{LABELS[kind]}, batch {batch}"
    if s is None or s == "skipped":
        what = s or "failed"
        print(f"{label:36}{form:>32}{what:>10}")
        table.append(f"| {label} | {form} | {what} | | | | |")
        continue
    eager, best = ref(kind, batch, "eager"), ref(kind, batch, "best")
    r_eager = f"{e / eager:.2f}" if eager else "-"
    r_best = f"{e / best:.2f}" if best else "-"
    print(f"{label:36}{form:>32}{s:10.4f}{e:10.2f}{r_eager:>10}{r_best:>10}{mem:10.0f}")
    table.append(f"| {label} | {form} | {s:.4f} | {e:.2f} | {r_eager} | {r_best} | {mem:.0f} |")
print(f"(step: one step's median; s/epoch = step x {images} // batch (demo step: x {DEMO_IMAGES} // batch).")
print(" whole epoch: augmentation included, best epoch after the first;")
print(" vs eager, vs best: s/epoch over PyTorch's f32 eager, and over its fastest form, at the same batch)")
for kind, batch, form, s, e, mem, q in rows:
    if q is not None and s:
        print(f"queued: {LABELS[kind]}, batch {batch}, {form}: {q:.4f} s of the step's {s:.4f} s ({100 * q / s:.0f} %)")
print()
print("| what | form | seconds | s/epoch | vs PyTorch eager | vs PyTorch's best | peak GPU MiB |")
print("|---|---|---:|---:|---:|---:|---:|")
print("\n".join(table))
PY
exit $status
