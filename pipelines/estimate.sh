#!/bin/sh
# The line `make` prints before a CPU run: how long its training should take.
#   estimate.sh DATASET BACKBONE IMAGES PRETRAIN PROJECT FINETUNE THREADS SPEED SPREAD [SIZE]
# SPEED: images/s of this backbone on 28x28 images on 2 threads (scaled
# linearly by THREADS), as measured on a slow day; SIZE: the side the images
# were resized to, which scales the speed by (28 / SIZE)^2 * 0.9 (14x14 ran
# at 3.6 times the speed of 28x28). The estimate is a range
# up to SPREAD times faster (the same epochs ran 1.7x faster on other days
# and machines). A project epoch costs about a third of a training epoch
# (a forward pass), and each image gives two views.
set -eu
[ $# -eq 9 ] || [ $# -eq 10 ] || {
  echo "usage: $0 DATASET BACKBONE IMAGES PRETRAIN PROJECT FINETUNE THREADS SPEED SPREAD [SIZE]" >&2
  exit 2
}
awk -v dataset="$1" -v backbone="$2" -v n="$3" -v pre="$4" -v proj="$5" -v fine="$6" \
    -v threads="$7" -v speed="$8" -v spread="$9" -v size="${10:-}" '
function u(s) { return s < 120 ? 1 : s < 7200 ? 60 : s < 172800 ? 3600 : 86400 }
function name(s) { return u(s) == 1 ? "seconds" : u(s) == 60 ? "minutes" : u(s) == 3600 ? "hours" : "days" }
function v(s) { return sprintf(u(s) == 3600 ? "%.1f" : "%.0f", s / u(s)) }
BEGIN {
  if (size != "") speed = speed * (28 / size) * (28 / size) * 0.9
  lo_speed = sprintf("%.0f", speed); hi_speed = sprintf("%.0f", lo_speed * spread)
  work = n * (pre + fine + proj / 3) * 2 / threads
  lo = work / hi_speed; hi = work / lo_speed
  range = name(lo) == name(hi) ? v(lo) "-" v(hi) " " name(hi) : v(lo) " " name(lo) " to " v(hi) " " name(hi)
  printf "%s: DEVICE=cpu: %s+%s+%s epochs of %s images, %s, %s threads: expect about %s of training from scratch ", \
    dataset, pre, proj, fine, n, backbone, threads, range
  printf "(at %s to %s images/s per 2 threads, as measured on different days).", lo_speed, hi_speed
  if (backbone == "resnet18") printf " This run is meant for a GPU: DEVICE=cuda."
  print ""
}'
