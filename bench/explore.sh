#!/usr/bin/env bash
# `explore`'s speed and size, and the page's in headless Chromium.
# Usage: bench/explore.sh [THREADS]   (or: make bench-explore)
#
# 1. The 70,000 Fashion-MNIST images (Debian's dataset-fashion-mnist) with a
#    PCA-2 map (bench/evaluate_sklearn.py makes it; needs numpy and pyarrow):
#    explore's wall time (best of 3, reading included) and map.html's size;
#    then the page in Chromium.
# 2. A synthetic million points (4×4 grey images in 20 classes, 20 Gaussian
#    clusters; crates/tsimcne-explore/examples/synthetic.rs), 2 neighbours
#    each: the same.
# In Chromium (software rendering, 1200×800): the first points and usable
# thumbnails in ms after navigation, one frame of panning (median and worst
# of 20), one hover pick (mean of 2,000), one lasso over half the screen
# (median of 5).
# Needs node, /usr/bin/chromium and `npm ci` in tests/browser.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
cargo build --release -q -p tsimcne-cli -p tsimcne-explore --bins --examples
target/release/tsimcne --link-stages target/release 2>/dev/null
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
images=$work/fm70k.parquet
map=$work/fm70k-pca2.parquet
[ -f "$images" ] || target/release/prep fashion-mnist --out "$images" 2>/dev/null
[ -f "$map" ] || python3 bench/evaluate_sklearn.py "$images" "$map" --make-embedding >/dev/null
synth=$work/synthetic1m
[ -f "$synth/embedding.parquet" ] || target/release/examples/synthetic 1000000 "$synth"

row() { # NAME EMBEDDING IMAGES OUT [FLAGS]
  local name=$1 emb=$2 img=$3 out=$4; shift 4
  local best=999
  for _ in 1 2 3; do
    t0=$(date +%s.%N)
    target/release/explore --embedding "$emb" --images "$img" --out "$out" --threads "$threads" "$@" 2>/dev/null
    t1=$(date +%s.%N)
    best=$(python3 -c "print(min($best, $t1 - $t0))")
  done
  local browser query
  # The points through WebGL2 (Chromium's software one here, forced: the page
  # takes it only on a GPU), then as the page chooses here (the 2-D canvas).
  for query in renderer=webgl2 ""; do
    browser=$(node bench/explore_browser.mjs "$out/map.html" $query)
    python3 - "$name" "$best" "$out/map.html" "$browser" <<'PY'
import json, os, sys
name, secs, html, b = sys.argv[1], float(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
mb = os.path.getsize(html) / 1e6
if "error" in b:
    print(f"{name:22}{secs:8.2f}{mb:9.1f}  page error: {b['error']}")
else:
    print(f"{name:22}{secs:8.2f}{mb:9.1f}{b['renderer']:>8}{b['first_draw_ms']:10.0f}{b['thumbnails_ms']:10.0f}"
          f"{b['frame_ms_median']:9.1f}{b['frame_ms_max']:8.1f}{b['pick_ms']:9.4f}{b['lasso_ms']:9.1f}")
PY
  done
}
printf '%-22s%8s%9s%8s%10s%10s%9s%8s%9s%9s\n' "" "explore" "MB" "points" "first" "thumbs" "frame" "worst" "pick" "lasso"
printf '%-22s%8s%9s%8s%10s%10s%9s%8s%9s%9s\n' "" "s" "" "via" "ms" "ms" "ms" "ms" "ms" "ms"
row "Fashion-MNIST 70,000" "$map" "$images" "$work/explore-fm70k"
row "synthetic 1,000,000" "$synth/embedding.parquet" "$synth/images.parquet" "$work/explore-1m" --neighbours 2
