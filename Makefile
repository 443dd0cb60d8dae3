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

.PHONY: help build demo test bench bench-prep clean

help:
	@echo "make demo        prep the embedded Fashion-MNIST test set into $(DEMO_DIR)/"
	@echo "make test        run the test suite (what CI runs)"
	@echo "make bench       run the benchmarks (bench-prep)"
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

bench: bench-prep

bench-prep:
	bench/prep.sh

clean:
	rm -rf $(RUNS)
