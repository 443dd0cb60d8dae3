#!/usr/bin/env bash
# One row of the demo's four-seed table: finetune from a demo run's
# `project` with the demo's 2-D flags plus yours, then kNN@15 on the
# hold-out draws of evaluate seeds 0-3 (5 splits each), as in
# docs/budget-study.md.
#
#   bench/finetune-table.sh RUN NAME [FINETUNE FLAGS...]
#
# RUN is a demo run directory (`make demo RUNS=/tmp/r` gives /tmp/r/demo)
# with images.parquet and project/; the map goes to RUN/NAME. Prints
#   NAME  finetune-seconds  seed0 seed1 seed2 seed3  mean
# BIN (default target/release) holds the stage binaries. The demo's own
# flags come first, so a flag given here overrides them.
set -euo pipefail
run=$1 name=$2
shift 2
bin=${BIN:-target/release}
out=$run/$name
t0=$(date +%s.%N)
"$bin/finetune" --images "$run/images.parquet" --from "$run/project" --out "$out" \
  --epochs 200 --warmup 0 --lr 0.05 --batch-size 256 --seed 0 --loss cauchy \
  --knn-positives 10 --knn-space joint --crop-min 1 --jitter-p 0 --map-scale 11 \
  "$@" > "$out.log" 2>&1
t1=$(date +%s.%N)
row="$name $(echo "$t1 - $t0" | bc | xargs printf '%.0f')"
sum=0
for seed in 0 1 2 3; do
  knn=$("$bin/evaluate" --embedding "$out/embedding.parquet" --images "$run/images.parquet" \
    --out "$out-eval-$seed" --k 15 --repeats 5 --seed "$seed" 2>&1 |
    sed -n 's/.*kNN@15 hold-out \([0-9.]*\).*/\1/p')
  row="$row $knn"
  sum=$(echo "$sum + $knn" | bc -l)
done
echo "$row $(echo "$sum / 4" | bc -l | xargs printf '%.4f')"
