#!/bin/sh
# Regenerates the bad-input corpus in this folder (all but manifest.txt and
# README.md, which are written by hand) with the generator in
# tests/corpus.rs. The output is deterministic.
set -eu
cd "$(dirname "$0")/../.."
exec cargo test -p tsimcne-cli --test corpus -- --ignored --exact regenerate_corpus
