# t-SimCNE pipeline. `make help` lists the targets.
#
# Every stage is a binary in target/release; a stage reruns only when its
# inputs change (plain file dependencies).

CARGO   ?= cargo
BIN     := target/release
RUNS    ?= runs
THREADS ?=

DEMO_DIR := $(RUNS)/demo
DEMO_DATA := data/fashion-mnist/t10k-images-idx3-ubyte.gz data/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: help build demo test bench bench-prep bench-augment clean

help:
	@echo "make demo        prep the embedded Fashion-MNIST test set into $(DEMO_DIR)/"
	@echo "make test        run the test suite (what CI runs)"
	@echo "make bench       run the benchmarks (bench-prep, bench-augment)"
	@echo "make build       build the release binaries"

build:
	$(CARGO) build --release --workspace --bins

$(BIN)/prep: build

# The demo: the embedded 10,000 Fashion-MNIST test images. Later stages
# (pretrain, project, finetune, evaluate) extend this chain.
demo: $(DEMO_DIR)/images.parquet

$(DEMO_DIR)/images.parquet: $(DEMO_DATA) | build
	@mkdir -p $(DEMO_DIR)
	$(BIN)/prep fashion-mnist --input data/fashion-mnist --out $@

test:
	$(CARGO) test --workspace

bench: bench-prep bench-augment

bench-prep:
	bench/prep.sh

# Our augmentations beside torchvision's (when python3 has torchvision).
bench-augment:
	$(CARGO) run --release -q -p tsimcne-augment --example throughput 2
	-python3 bench/augment_torchvision.py 2

clean:
	rm -rf $(RUNS)
