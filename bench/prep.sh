#!/usr/bin/env bash
# Times `prep` on the full Fashion-MNIST (70,000 images, from Debian's
# dataset-fashion-mnist) and on a CIFAR-10-shaped archive of 60,000 images.
# Usage: bench/prep.sh   (or: make bench-prep). Prints the best of 3 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tsimcne-cli && target/release/tsimcne --link-stages target/release 2>/dev/null
work=${BENCH_DIR:-target/bench}
mkdir -p "$work"
archive=$work/cifar-like-10-binary.tar.gz
[ -f "$archive" ] || python3 bench/make_cifar_like.py "$archive" >/dev/null

best() { # best wall time of 3 runs of "$@", in seconds
  local b=999
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N); "$@" 2>/dev/null; t1=$(date +%s.%N)
    b=$(python3 -c "print(min($b, $t1 - $t0))")
  done
  printf '%.2f' "$b"
}

printf '%-44s %8s %8s\n' "workload" "seconds" "target"
if [ -d /usr/share/datasets/fashion-mnist ]; then
  t=$(best target/release/prep fashion-mnist --out "$work/fm.parquet")
  printf '%-44s %8s %8s\n' "fashion-mnist, 70,000 images (IDX .gz)" "$t" "< 2"
fi
t=$(best target/release/prep cifar10 --input "$archive" --no-verify --out "$work/c10.parquet")
printf '%-44s %8s %8s\n' "cifar10 layout, 60,000 images (.tar.gz)" "$t" "< 5"
ls -l "$work"/*.parquet | awk '{print "  " $NF ": " $5 " bytes"}'
