#!/bin/sh
# Runs one training stage (pretrain, project or finetune) for an orchestrator
# (make, DVC, Snakemake), so that rerunning it does the right thing:
#
#   sh pipelines/stage.sh [--reuse-from DIR]... BINARY --out DIR [ARGS...]
#
# Resume or start over. A stage binary resumes from DIR/checkpoint.safetensors
# and refuses a checkpoint made with other settings unless given --restart
# (which discards it). This script keys a run by what determines its result:
# the settings the stage itself prints for these arguments (`--print-key`:
# every setting, given or default, but the paths and those that change
# nothing beyond rounding), plus the checksums of the --images table and of
# the --from model. It records the key
# in DIR/.stage-key when it starts and passes --restart when the key differs
# from the recorded one, so an interrupted run resumes and a changed run
# starts over.
#
# Reuse. When a stage finishes, its key goes to DIR/.done-key. If a
# --reuse-from directory finished with the same key, it is copied to DIR
# instead of training again (make's runs/<dataset>/<run> folders share their
# upstream stages this way), without its checkpoint: a later rerun there
# starts over.
#
# Paths must not contain white space. POSIX sh.
set -eu

me=stage.sh
reuse=
while [ $# -gt 1 ] && [ "$1" = --reuse-from ]; do
    reuse="$reuse $2"
    shift 2
done
if [ $# -lt 1 ]; then
    echo "usage: $me [--reuse-from DIR]... BINARY --out DIR [ARGS...]" >&2
    exit 2
fi
bin=$1
shift
name=$(basename "$bin")

out= images= from= forced= next=
for a in "$@"; do
    case $next in
    out) out=$a ;;
    images) images=$a ;;
    from) from=$a ;;
    esac
    if [ -n "$next" ]; then
        next=
        continue
    fi
    case $a in
    --out | --images | --from) next=${a#--} ;;
    --out=*) out=${a#*=} ;;
    --images=*) images=${a#*=} ;;
    --from=*) from=${a#*=} ;;
    --restart) forced=1 ;;
    esac
done
if [ -z "$out" ]; then
    echo "$me: no --out DIR in: $bin $*" >&2
    exit 2
fi

# The stage checks the arguments here: a bad one stops the script.
settings=$("$bin" "$@" --print-key)
key="stage $name
$settings"
if [ -n "$images" ]; then
    key="$key
images $(cksum <"$images")"
fi
if [ -n "$from" ]; then
    key="$key
from $(cksum <"$from/model.safetensors")"
fi

for c in $reuse; do
    [ "$c" != "$out" ] || continue
    if [ -f "$c/config.json" ] && [ -f "$c/.done-key" ] &&
        [ "$(cat "$c/.done-key")" = "$key" ]; then
        echo "$me: $name: $c was made with the same settings and inputs; copying it to $out"
        tmp="$out.reuse.$$"
        rm -rf "$tmp"
        cp -R "$c" "$tmp"
        rm -f "$tmp/checkpoint.safetensors" "$tmp/.stage-key"
        rm -rf "$out"
        mv "$tmp" "$out"
        touch "$out/config.json"
        exit 0
    fi
done

mkdir -p "$out"
restart=--restart
if [ -n "$forced" ]; then
    restart=
elif [ -f "$out/.stage-key" ] && [ "$(cat "$out/.stage-key")" = "$key" ]; then
    restart=
fi
if [ -n "$restart" ] && [ -f "$out/checkpoint.safetensors" ]; then
    echo "$me: $name: settings or inputs changed since the checkpoint in $out was made; starting over"
fi
# From here on, any checkpoint in $out is one made with $key.
if [ -n "$restart" ]; then
    rm -f "$out/checkpoint.safetensors" "$out/log.csv"
fi
rm -f "$out/.done-key"
printf '%s\n' "$key" >"$out/.stage-key"
"$bin" "$@" $restart
printf '%s\n' "$key" >"$out/.done-key"
