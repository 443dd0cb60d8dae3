#!/usr/bin/env bash
# `prep folder` on 20,000 photo-like 256x256 JPEGs (bench/make_jpeg_folder.py)
# to a 32x32 table, beside the usual Python loop (Pillow: open, convert,
# resize, numpy.stack) and, when torch and torchvision are installed,
# torchvision's ImageFolder through a DataLoader with 2 workers
# (bench/prep_folder_python.py), in one run, with peak memory.
# Usage: bench/prep_folder.sh [THREADS]   (or: make bench-prep-folder)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
cargo build --release -q -p tsimcne-cli && target/release/tsimcne --link-stages target/release 2>/dev/null
work=${BENCH_DIR:-target/bench}
folder=$work/jpeg20k
[ -d "$folder" ] || python3 bench/make_jpeg_folder.py "$folder" 20000
best=999 peak=0
for _ in 1 2 3; do
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/prep_folder.rss" target/release/prep folder --input "$folder" --size 32 \
    --threads "$threads" --out "$work/jpeg20k.parquet" 2>/dev/null
  t1=$(date +%s.%N)
  best=$(python3 -c "print(min($best, $t1 - $t0))")
  peak=$(python3 -c "print(max($peak, $(cat "$work/prep_folder.rss") / 1024))")
done
py=$(python3 bench/prep_folder_python.py "$folder")
python3 - "$best" "$peak" "$py" <<'PY'
import json, sys
ours, peak, py = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
print(f"{py['images']} JPEGs, 256x256 to 32x32")
print(f"{'':34}{'seconds':>9}{'peak MiB':>10}{'ours faster':>13}")
print(f"{'prep folder (best of 3)':34}{ours:9.2f}{peak:10.0f}")
print(f"{'Pillow loop + numpy.stack':34}{py['pillow_seconds']:9.2f}{py['pillow_peak_mib']:10.0f}{py['pillow_seconds'] / ours:12.1f}x")
if py.get("torchvision_seconds"):
    t = py["torchvision_seconds"]
    print(f"{'torchvision ImageFolder, 2 workers':34}{t:9.2f}{py['torchvision_peak_mib']:10.0f}{t / ours:12.1f}x")
else:
    print("torchvision: not installed (pip install torch torchvision), not measured")
PY
