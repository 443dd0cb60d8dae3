#!/usr/bin/env bash
# Our CPU training step beside PyTorch's, in one run, with the ratios.
# Usage: bench/train.sh [THREADS] [ROUNDS]   (or: make bench-train)
#
# For each case, ours (examples/bench_train.rs) and PyTorch
# (bench/train_torch.py) run alternately ROUNDS times (default 3), each in
# a fresh process, and the best time of each is kept: this machine is shared
# and noisy, so only a ratio from one run means anything. Cases: the full
# step (forward + backward + SGD) and the forward alone for `small` and
# `resnet18` at 128 and 512 views of 32×32×3, and the per-op timings (conv
# forward, input gradient, weight gradient, BN forward+backward) at 128
# images. Peak RSS is each process's VmHWM / ru_maxrss. Needs python3 with
# torch (pip install torch).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
cargo build --release -q -p tsimcne-train --example bench_train
ours=target/release/examples/bench_train
export RAYON_NUM_THREADS=$threads THREADS=$threads
work=${BENCH_DIR:-target/bench}/train
rm -rf "$work" && mkdir -p "$work"

run_case() { # NAME ARGS...
  local name=$1; shift
  for _ in $(seq "$rounds"); do
    "$ours" "$@" >>"$work/$name.ours"
    python3 bench/train_torch.py "$@" >>"$work/$name.torch"
  done
}

cases=(
  "step small 128" "step small 512" "fwd small 128" "fwd small 512"
  "step resnet18 128" "step resnet18 512" "fwd resnet18 128" "fwd resnet18 512"
  "ops"
)
for c in "${cases[@]}"; do
  # shellcheck disable=SC2086
  run_case "${c// /_}" $c
done

python3 - "$work" <<'PY'
import collections, pathlib, sys
work = pathlib.Path(sys.argv[1])
def best(path):
    vals = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        k, v = line.split()
        vals[k].append(float(v))
    return {k: (max(v) if k == "peak_rss_mib" else min(v)) for k, v in vals.items()}
print(f"{'case':26}{'ours s':>10}{'torch s':>10}{'ratio':>8}{'ours MiB':>10}{'torch MiB':>10}")
for f in sorted(work.glob("*.ours")):
    o, t = best(f), best(f.with_suffix(".torch"))
    for k in o:
        if k == "peak_rss_mib" or k not in t:
            continue
        mem = (f"{o['peak_rss_mib']:10.0f}{t['peak_rss_mib']:10.0f}" if not k.startswith(("conv", "bn")) else "")
        print(f"{k:26}{o[k]:10.4f}{t[k]:10.4f}{o[k] / t[k]:8.2f}{mem}")
PY
