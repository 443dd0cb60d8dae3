#!/usr/bin/env bash
# `evaluate` beside scikit-learn/numpy computing the same metrics, in one run.
# Usage: bench/evaluate.sh [THREADS]   (or: make bench-evaluate)
#
# Workload (the issue's): the 70,000 Fashion-MNIST images (Debian's
# dataset-fashion-mnist), a 2-D map of them (PCA-2, made by the Python
# script), kNN@15 train→test and on 5 stratified 10,000-point hold-outs,
# and neighbour preservation against the 784-D pixels for 10,000 sampled
# query points. Ours: best of 3 whole-process wall times (reading the tables
# included). scikit-learn: the computation only (reading excluded). Needs
# python3 with numpy, pyarrow, scikit-learn and threadpoolctl.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
cargo build --release -q -p tsimcne-cli && target/release/tsimcne --link-stages target/release 2>/dev/null
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
images=$work/fm70k.parquet
map=$work/fm70k-pca2.parquet
[ -f "$images" ] || target/release/prep fashion-mnist --out "$images" 2>/dev/null
[ -f "$map" ] || python3 bench/evaluate_sklearn.py "$images" "$map" --make-embedding >/dev/null

best=999
for _ in 1 2 3; do
  t0=$(date +%s.%N)
  target/release/evaluate --embedding "$map" --images "$images" --reference pixels \
    --sample 10000 --threads "$threads" --no-plot --out "$work/evaluate" >"$work/evaluate.txt" 2>/dev/null
  t1=$(date +%s.%N)
  best=$(python3 -c "print(min($best, $t1 - $t0))")
done
sk=$(python3 bench/evaluate_sklearn.py "$images" "$map" --threads "$threads")
python3 - "$best" "$sk" "$work/evaluate/metrics.json" <<'PY'
import json, sys
ours, sk, m = float(sys.argv[1]), json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
acc = m["knn_accuracy"]
print(f"{'':24}{'seconds':>9}{'train→test':>12}{'hold-out':>10}{'pres. pixels':>14}")
print(f"{'evaluate':24}{ours:9.2f}{acc['train_test']:12.4f}{acc['holdout']['mean']:10.4f}"
      f"{m['neighbor_preservation']['pixels']:14.4f}")
print(f"{'scikit-learn/numpy':24}{sk['seconds']:9.2f}{sk['train_test']:12.4f}{sk['holdout_mean']:10.4f}"
      f"{sk['preservation_pixels']:14.4f}")
print(f"speed-up: {sk['seconds'] / ours:.1f}x  (hold-outs and query samples are drawn by different"
      " generators, so those two columns differ slightly; train→test must agree)")
PY
