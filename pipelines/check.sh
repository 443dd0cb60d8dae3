#!/bin/sh
# End-to-end checks of the orchestration on tiny data (300 Fashion-MNIST
# images, the tiny network, one epoch per stage), each in a scratch folder:
#
#   pipelines/check.sh make        the Makefile: a full run, nothing reruns,
#                                  a changed parameter reruns only downstream,
#                                  a new run reuses the unchanged stages
#   pipelines/check.sh dvc         dvc repro, up to date, dvc exp run -S
#   pipelines/check.sh snakemake   a run, nothing reruns, --config reruns only
#                                  downstream, a dry run with the SLURM profile
#
# BIN: the stage binaries (default target/release). DVC, SNAKEMAKE: the tools
# (default dvc, snakemake on PATH); their checks are skipped when missing,
# unless TSIMCNE_REQUIRE_PIPELINE_TOOLS=1 (as in CI).
# `make pipeline-test` runs all three.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:?usage: pipelines/check.sh make|dvc|snakemake}
BIN=${BIN:-target/release}
case $BIN in /*) ;; *) BIN=$root/$BIN ;; esac
DVC=${DVC:-dvc}
SNAKEMAKE=${SNAKEMAKE:-snakemake}
export DVC_NO_ANALYTICS=1
# The make checks set their own variables; none may leak in from a calling make.
unset MAKEFLAGS MFLAGS MAKELEVEL || true

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsimcne-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=$tmp/log

say() { echo "check $mode: $*"; }
# missing TOOL: skip the check, or fail where the tools are required.
missing() {
    [ "${TSIMCNE_REQUIRE_PIPELINE_TOOLS:-}" != 1 ] || fail "no $1 (TSIMCNE_REQUIRE_PIPELINE_TOOLS=1)"
    say "skipped: no $1 (pip install dvc snakemake)"
    exit 0
}
fail() {
    echo "check $mode: FAILED: $*" >&2
    [ ! -s "$log" ] || { echo "--- last output:" >&2; tail -n 40 "$log" >&2; }
    exit 1
}
# run CMD...: run quietly into $log, fail with its output on error.
run() { "$@" >"$log" 2>&1 || fail "$*"; }
exists() { for f in "$@"; do [ -s "$f" ] || fail "missing output $f"; done; }
# newer MARKER DIR: the files under DIR modified after MARKER, sorted.
newer() { find "$2" -type f -newer "$1" | sort; }
mark() { sleep 1; touch "$tmp/$1"; }
outputs() {
    exists "$1/images.parquet" "$1/pretrain/model.safetensors" "$1/pretrain/config.json" \
        "$1/pretrain/features.parquet" "$1/pretrain/log.csv" "$1/project/model.safetensors" \
        "$1/project/embedding.parquet" "$1/finetune/model.safetensors" \
        "$1/finetune/embedding.parquet" "$1/evaluate/metrics.json" "$1/evaluate/map.png" \
        "$1/explore/map.html"
}
# A copy of pipelines/ in the repository's layout: $tmp/repo/pipelines, with
# target/release and data/ linking to the real ones.
scratch() {
    mkdir -p "$tmp/repo/target"
    cp -R "$root/pipelines" "$tmp/repo/pipelines"
    (cd "$tmp/repo/pipelines" && rm -rf runs .snakemake dvc.lock .dvc/tmp .dvc/cache .dvc/config.local)
    ln -s "$BIN" "$tmp/repo/target/release"
    ln -s "$root/data" "$tmp/repo/data"
}

case $mode in
make)
    m() { make --no-print-directory -C "$root" RUNS="$tmp/runs" BIN="$BIN" NO_BUILD=1 "$@"; }
    d=$tmp/runs/tiny/default
    say "make tiny"
    run m tiny
    outputs "$d"

    mark t1
    run m tiny
    m -q tiny >"$log" 2>&1 || fail "make -q tiny: a finished run is not up to date"
    [ -z "$(newer "$tmp/t1" "$tmp/runs")" ] || fail "a second make tiny rewrote $(newer "$tmp/t1" "$tmp/runs")"
    say "a second make tiny reran nothing"

    mark t2
    run m tiny PROJECT_EPOCHS=2
    e=$tmp/runs/tiny/project_epochs2
    outputs "$e"
    [ "$(m -s tiny-dir PROJECT_EPOCHS=2)" = "$e" ] || fail "make tiny-dir names another folder than $e"
    grep -q "copying it to $e/pretrain" "$log" || fail "the new run did not reuse pretrain"
    if grep -q "copying it to $e/project" "$log"; then fail "the new run reused project"; fi
    cmp -s "$d/pretrain/model.safetensors" "$e/pretrain/model.safetensors" || fail "reused pretrain differs"
    [ -z "$(newer "$tmp/t2" "$d")" ] || fail "make tiny PROJECT_EPOCHS=2 touched $d"
    say "PROJECT_EPOCHS=2 went to runs/tiny/project_epochs2, reusing pretrain, leaving runs/tiny/default alone"

    mark t3
    run m tiny RUN=default FINETUNE_EPOCHS=2
    got=$(newer "$tmp/t3" "$d" | sed "s|^$d/||" | grep -v '^finetune/' | grep -v '^evaluate/' | grep -v '^explore/' || true)
    [ "$got" = ".finetune.params" ] || fail "FINETUNE_EPOCHS=2 rewrote more than finetune, evaluate and explore: $got"
    [ -n "$(newer "$tmp/t3" "$d/evaluate")" ] || fail "evaluate did not rerun"
    [ -n "$(newer "$tmp/t3" "$d/explore")" ] || fail "explore did not rerun"
    [ "$(wc -l <"$d/finetune/log.csv")" -eq 3 ] || fail "finetune did not train 2 epochs"
    m -q tiny RUN=default FINETUNE_EPOCHS=2 >"$log" 2>&1 || fail "the changed run is not up to date"
    say "RUN=default FINETUNE_EPOCHS=2 reran only finetune, evaluate and explore"

    mark t4
    run m tiny RUN=default FINETUNE_EPOCHS=2 K=5
    got=$(newer "$tmp/t4" "$d" | sed "s|^$d/||" | grep -v '^evaluate/' | grep -v '^explore/' || true)
    [ "$got" = ".evaluate.params" ] || fail "K=5 reran more than evaluate and explore: $got"
    say "K=5 reran only evaluate and explore"
    ;;

dvc)
    command -v "$DVC" >/dev/null 2>&1 || missing "$DVC"
    scratch
    cd "$tmp/repo/pipelines"
    cp tiny.yaml params.yaml
    git -C "$tmp/repo" init -q
    git -C "$tmp/repo" add -A
    git -C "$tmp/repo" -c user.name=check -c user.email=check@localhost commit -qm scratch
    d=runs/tiny/tiny
    say "dvc repro"
    run "$DVC" repro
    outputs "$d"
    run "$DVC" repro
    if grep -q "Running stage" "$log"; then fail "a second dvc repro ran a stage"; fi
    run "$DVC" status
    grep -q "up to date" "$log" || fail "dvc status: not up to date"
    say "a second dvc repro ran nothing"

    mark t1
    run "$DVC" exp run -S pretrain.epochs=2
    grep -q "Stage 'prep' didn't change" "$log" || fail "dvc exp run reran prep"
    for s in pretrain project finetune evaluate explore; do
        grep -q "Running stage '$s'" "$log" || fail "dvc exp run did not rerun $s"
    done
    [ -z "$(newer "$tmp/t1" "$d/images.parquet")" ] || fail "dvc exp run rewrote images.parquet"
    [ "$(wc -l <"$d/pretrain/log.csv")" -eq 3 ] || fail "pretrain did not train 2 epochs"
    outputs "$d"
    run "$DVC" metrics show
    run "$DVC" exp show --no-pager
    say "dvc exp run -S pretrain.epochs=2 reran pretrain and what follows, not prep"
    ;;

snakemake)
    command -v "$SNAKEMAKE" >/dev/null 2>&1 || missing "$SNAKEMAKE"
    scratch
    cd "$tmp/repo/pipelines"
    d=runs/tiny/tiny
    sm() { "$SNAKEMAKE" --cores 2 --configfile tiny.yaml "$@"; }
    say "snakemake --configfile tiny.yaml"
    run sm
    outputs "$d"
    exists "$d/logs/pretrain.log" "$d/benchmarks/pretrain.tsv"
    run sm -n
    grep -q "Nothing to be done" "$log" || fail "snakemake -n after a run: not up to date"
    say "a second snakemake has nothing to do"

    mark t1
    run sm --config "finetune={epochs: 2}" -n
    jobs=$(sed -n '/^Job stats/,/^total/p' "$log" | awk 'NF == 2 && $2 ~ /^[0-9]+$/ && $1 != "total" { print $1 }' | sort -u | tr '\n' ' ')
    [ "$jobs" = "all evaluate explore finetune " ] || fail "finetune={epochs: 2} would run: $jobs"
    run sm --config "finetune={epochs: 2}"
    [ -z "$(newer "$tmp/t1" "$d/images.parquet")$(newer "$tmp/t1" "$d/pretrain")$(newer "$tmp/t1" "$d/project")" ] ||
        fail "finetune={epochs: 2} rewrote upstream files"
    [ "$(wc -l <"$d/finetune/log.csv")" -eq 3 ] || fail "finetune did not train 2 epochs"
    say "--config finetune={epochs: 2} reran only finetune, evaluate and explore"

    run "$SNAKEMAKE" --profile profiles/slurm -n
    grep -q "gpu=1" "$log" || fail "the SLURM dry run asks for no GPU"
    grep -q "slurm_partition=gpu" "$log" || fail "the SLURM dry run uses no GPU partition"
    say "snakemake --profile profiles/slurm -n plans the paper's run"
    ;;

*)
    echo "usage: pipelines/check.sh make|dvc|snakemake" >&2
    exit 2
    ;;
esac
say ok
