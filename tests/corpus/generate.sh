#!/bin/sh
# Regenerates the bad-input corpus in this folder (all but manifest.txt,
# README.md, this script and the fuzz finds) and fuzz/seeds, with the
# generator in tests/corpus.rs. The output is deterministic; without
# TSIMCNE_REGENERATE_CORPUS the same test checks the committed files instead.
set -eu
cd "$(dirname "$0")/../.."
TSIMCNE_REGENERATE_CORPUS=1 exec cargo test -p tsimcne-cli --test corpus -- --exact the_corpus_is_what_its_generator_writes
