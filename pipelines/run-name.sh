#!/bin/sh
# The name of a run folder (runs/<dataset>/<name>) from the hyperparameters
# that differ from their defaults, given as VAR=VALUE in the Makefile's
# order: `BATCH=512 PRETRAIN_EPOCHS=500` → `batch512-pretrain_epochs500`.
# Names lower-cased, values as given with spaces as `_`, parts joined by
# `-`; any other character outside [A-Za-z0-9._+-] becomes `_`, and the
# name is cut at 120 characters. With no argument, prints $RUN_DEFAULT.
set -eu
[ $# -gt 0 ] || { printf '%s\n' "${RUN_DEFAULT:-default}"; exit 0; }
name=
for kv in "$@"; do
  var=$(printf '%s' "${kv%%=*}" | tr 'A-Z' 'a-z')
  value=$(printf '%s' "${kv#*=}" | tr ' ' '_')
  name=${name:+$name-}$var$value
done
printf '%s' "$name" | tr -c 'A-Za-z0-9._+-' '_' | cut -c1-120
