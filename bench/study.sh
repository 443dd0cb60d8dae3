#!/usr/bin/env bash
# Budget study for the CPU demo (issue 10): what a short schedule gives on the
# 10,000 embedded Fashion-MNIST test images, one line per setting.
#
# Usage: bench/study.sh [SETTINGS_FILE] [THREADS]
#   SETTINGS_FILE (default bench/study.tsv): one setting per line,
#     name  backbone  batch  pretrain_epochs  project_epochs  finetune_epochs  init
#       [pretrain_flags  [project_flags  [finetune_flags  [prep_flags]]]]
#   each *_flags one field with commas for spaces (`--warmup,0,--crop-min,0.5`),
#   `-` for none; prep_flags change the image table (e.g. `--size,14`). Lines starting with # are skipped. A pretrained model is
#   shared by every setting with the same (prep_flags, backbone, batch,
#   pretrain_epochs, pretrain_flags), so sweeping the 2-D stages costs only their own time; the
#   wall time printed is the sum of the three training stages as this setting
#   would run them alone.
#
# Prints (and appends to target/bench/study/results.tsv): the settings, wall
# seconds, kNN@15 of the 2-D map under the hold-out protocol (5 stratified
# 2,000-point hold-outs), the 128-D head's kNN@15, and neighbour preservation
# of the 2-D map against the pixels (of the table it trained on) and against
# the 128-D head outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
settings=${1:-bench/study.tsv}
threads=${2:-2}
cargo build --release -q -p tsimcne-cli && target/release/tsimcne --link-stages target/release 2>/dev/null
bin=${CARGO_TARGET_DIR:-target}/release
work=${BENCH_DIR:-target/bench}/study
mkdir -p "$work"
results=$work/results.tsv
[ -f "$results" ] || printf 'name\tbackbone\tbatch\tpretrain\tproject\tfinetune\tinit\tpretrain_flags\tproject_flags\tfinetune_flags\tprep_flags\tseconds\tknn2d\tknn128\tpres_pixels\tpres_head\n' >"$results"

secs() { python3 -c "import json,sys; print(sum(float(l.split(',')[3]) for l in open(sys.argv[1]).read().splitlines()[1:]))" "$1/log.csv"; }
metric() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

flags() { [ "${1:--}" = - ] && return; printf '%s' "$1" | tr ',' ' '; }

grep -v '^\s*#' "$settings" | grep -v '^\s*$' | while read -r name backbone batch pe je fe init pf jf ff xf; do
  images=$work/images.parquet
  [ "${xf:--}" = - ] || images=$work/images-$(flags "$xf" | tr -c 'A-Za-z0-9.' '_').parquet
  # shellcheck disable=SC2046
  [ -f "$images" ] || "$bin/prep" fashion-mnist --input data/fashion-mnist --out "$images" $(flags "$xf") 2>/dev/null
  pre=$work/pretrain-$backbone-b$batch-e$pe
  [ "${xf:--}" = - ] || pre=$pre-$(flags "$xf" | tr -c 'A-Za-z0-9.' '_')
  [ "${pf:--}" = - ] || pre=$pre-$(flags "$pf" | tr -c 'A-Za-z0-9.' '_')
  if [ ! -f "$pre/model.safetensors" ]; then
    # shellcheck disable=SC2046
    "$bin/pretrain" --images "$images" --out "$pre" --backbone "$backbone" --batch-size "$batch" \
      --epochs "$pe" --threads "$threads" $(flags "$pf") 2>"$pre.log" >/dev/null \
      || { echo "$name: pretrain failed, see $pre.log"; continue; }
  fi
  if [ ! -f "$pre/eval/metrics.json" ]; then
    "$bin/evaluate" --embedding "$pre/features.parquet" --column head --images "$images" \
      --no-plot --threads "$threads" --out "$pre/eval" 2>/dev/null >/dev/null
  fi
  run=$work/$name
  rm -rf "$run" && mkdir -p "$run"
  # shellcheck disable=SC2046
  "$bin/project" --images "$images" --from "$pre" --out "$run/project" --epochs "$je" \
    --batch-size "$batch" --init "$init" --threads "$threads" $(flags "$jf") 2>"$run/project.log" >/dev/null \
    || { echo "$name: project failed, see $run/project.log"; continue; }
  # shellcheck disable=SC2046
  "$bin/finetune" --images "$images" --from "$run/project" --out "$run/finetune" --epochs "$fe" \
    --batch-size "$batch" --threads "$threads" $(flags "$ff") 2>"$run/finetune.log" >/dev/null \
    || { echo "$name: finetune failed, see $run/finetune.log"; continue; }
  "$bin/evaluate" --embedding "$run/finetune/embedding.parquet" --images "$images" \
    --reference pixels --reference "head=$pre/features.parquet:head" --no-plot \
    --threads "$threads" --out "$run/eval" 2>/dev/null >/dev/null
  total=$(python3 -c "print(round($(secs "$pre") + $(secs "$run/project") + $(secs "$run/finetune"), 1))")
  m=$run/eval/metrics.json
  line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.4f\t%.4f\t%.4f\t%.4f' "$name" "$backbone" "$batch" "$pe" "$je" "$fe" "$init" \
    "${pf:--}" "${jf:--}" "${ff:--}" "${xf:--}" "$total" \
    "$(metric "$m" "m['knn_accuracy']['holdout']['mean']")" \
    "$(metric "$pre/eval/metrics.json" "m['knn_accuracy']['holdout']['mean']")" \
    "$(metric "$m" "m['neighbor_preservation']['pixels']")" \
    "$(metric "$m" "m['neighbor_preservation']['head']")")
  echo "$line" | tee -a "$results"
done
