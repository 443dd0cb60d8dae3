#!/usr/bin/env bash
# Minutes of training against the map's kNN@15 for the demo's CPU preset
# (issue 31's trade-off): one `make demo` per pretraining length, then
# fine-tuning runs of other lengths from its `project`, each scored on the
# hold-out draws of evaluate seeds 0-3 as in docs/budget-study.md.
#
#   bench/tradeoff.sh OUT [BIN]
#
# BIN (default target/release) holds the stage binaries; for the AVX2
# figure build them with `cargo build --release --workspace --bins
# --no-default-features --target-dir target/avx2` and pass
# target/avx2/release (after `target/avx2/release/tsimcne --link-stages
# target/avx2/release`). Writes OUT/tradeoff.tsv, one row per map:
#   pretrain project finetune freeze  train_s  seed0 seed1 seed2 seed3 mean
# train_s is the training time of the row's epochs at the rates of one
# reference run: each stage's median epoch seconds in its log.csv, times
# the row's epochs of that stage (every epoch of a stage does the same
# work; prep, the neighbour lists and evaluate are left out). The reference
# is OUT/p40/demo (the first `make demo`), or TRADEOFF_RATES=DIR, a demo
# run folder timed on a quiet machine. A fine-tuning length may name its
# frozen stages, `400:3` (`--freeze-layers 3`; the demo's is 2): such a
# row's fine-tuning rate is its own run's median epoch. The maps are deterministic (same
# seed and threads, same bytes), so a second call reuses every finished
# run and only scores and times again. openTSNE's row (where installed)
# has its own seconds. bench/tradeoff_plot.py draws the table.
set -euo pipefail
out=$(realpath -m "$1")
bin=$(realpath "${2:-target/release}")
mkdir -p "$out"
tsv=$out/tradeoff.tsv
rows=$out/rows.tmp
: > "$rows"

# kNN@15 of an embedding on evaluate seeds 0-3, and their mean.
score() {
  local emb=$1 images=$2 row= sum=0 knn
  for seed in 0 1 2 3; do
    knn=$("$bin/evaluate" --embedding "$emb" --images "$images" --out "$out/eval-tmp" \
      --k 15 --repeats 5 --seed "$seed" 2>&1 | sed -n 's/.*kNN@15 hold-out \([0-9.]*\).*/\1/p')
    [ -n "$knn" ] || { echo "tradeoff: evaluate of $emb printed no kNN@15" >&2; exit 1; }
    row="$row	$knn"
    sum=$(echo "$sum + $knn" | bc -l)
  done
  printf '%s\t%.4f' "$row" "$(echo "$sum / 4" | bc -l)"
}

# One pretraining length: make demo with it and FT0 finetune epochs, then
# finetune runs of the other lengths from the same project.
demo() {
  local pre=$1 ft0=$2
  shift 2
  local runs=$out/p$pre
  local run=$runs/demo
  if [ ! -f "$run/finetune/config.json" ]; then
    echo "tradeoff: make demo, pretrain $pre, finetune $ft0" >&2
    /usr/bin/time -f 'tradeoff: make demo wall %e s' make --no-print-directory demo \
      RUNS="$runs" BIN="$bin" NO_BUILD=1 DEMO_PRETRAIN_EPOCHS="$pre" \
      DEMO_FINETUNE_EPOCHS="$ft0" > "$runs.log" 2>&1 || { tail "$runs.log" >&2; exit 1; }
    grep 'tradeoff: make demo wall' "$runs.log" >&2
  fi
  printf '%s\t%s\t2\t%s%s\n' "$pre" "$ft0" "$run/finetune" \
    "$(score "$run/finetune/embedding.parquet" "$run/images.parquet")" >> "$rows"
  for spec in "$@"; do
    local ft=${spec%%:*} freeze=2
    [ "$spec" = "$ft" ] || freeze=${spec#*:}
    local dir=$run/finetune-$ft
    [ "$freeze" = 2 ] || dir=$dir-f$freeze
    if [ ! -f "$dir/config.json" ]; then
      echo "tradeoff: pretrain $pre, finetune $ft, --freeze-layers $freeze" >&2
      "$bin/finetune" --images "$run/images.parquet" --from "$run/project" --out "$dir" \
        --epochs "$ft" --warmup 0 --lr 0.05 --batch-size 256 --seed 0 --loss cauchy \
        --knn-positives 10 --knn-space joint --crop-min 1 --jitter-p 0 --map-scale 11 \
        --freeze-layers "$freeze" > "$dir.log" 2>&1 || { tail "$dir.log" >&2; exit 1; }
    fi
    printf '%s\t%s\t%s\t%s%s\n' "$pre" "$ft" "$freeze" "$dir" \
      "$(score "$dir/embedding.parquet" "$run/images.parquet")" >> "$rows"
  done
}

demo 40 200 ${TRADEOFF_FINETUNE:-50 100 400 400:3}
demo 20 100 ${TRADEOFF_FINETUNE_P20:-}

# The reference run's median epoch seconds per stage (log.csv:
# epoch,loss,lr,seconds,images_per_s).
rates=${TRADEOFF_RATES:-$out/p40/demo}
median() {
  tail -n +2 "$1/log.csv" | cut -d, -f4 | sort -g |
    awk '{ v[NR] = $1 } END { printf "%.4f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
r_pre=$(median "$rates/pretrain") r_proj=$(median "$rates/project") r_ft=$(median "$rates/finetune")
project_epochs=$(tail -n +2 "$rates/project/log.csv" | wc -l)
echo "tradeoff: rates from $rates: pretrain $r_pre s, project $r_proj s, finetune $r_ft s an epoch" >&2
printf 'pretrain\tproject\tfinetune\tfreeze\ttrain_s\tseed0\tseed1\tseed2\tseed3\tmean\n' > "$tsv"
while IFS=$'\t' read -r pre ft freeze dir scores; do
  rate=$r_ft
  [ "$freeze" = 2 ] || rate=$(median "$dir")
  s=$(echo "$pre * $r_pre + $project_epochs * $r_proj + $ft * $rate" | bc -l)
  printf '%s\t%s\t%s\t%s\t%.0f\t%s\n' "$pre" "$project_epochs" "$ft" "$freeze" "$s" "$scores" >> "$tsv"
done < "$rows"

# openTSNE of the same 14x14 pixels (bench/opentsne.py), where installed;
# its seconds are the t-SNE's own.
if python3 -c 'import openTSNE' 2>/dev/null; then
  images=$out/p40/demo/images.parquet
  t=$(python3 "$(dirname "$0")/opentsne.py" "$images" "$out/opentsne.parquet" --threads 2 |
    sed -n 's/.* points \([0-9.]*\) s/\1/p')
  printf 'opentsne\t-\t-\t-\t%s\t%s\n' "$t" "$(score "$out/opentsne.parquet" "$images" | cut -f2-)" >> "$tsv"
else
  echo "tradeoff: openTSNE not installed (pip install openTSNE), its row left out" >&2
fi
rm -rf "$out/eval-tmp" "$rows"
cat "$tsv"
