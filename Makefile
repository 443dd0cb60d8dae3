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
	@echo "make demo        prep → pretrain → project → finetune on the embedded Fashion-MNIST test set, into $(DEMO_DIR)/"
	@echo "make test        run the test suite (what CI runs)"
	@echo "make bench       run the benchmarks (bench-prep, bench-augment)"
	@echo "make build       build the release binaries"

build:
	$(CARGO) build --release --workspace --bins

$(BIN)/prep: build

# The demo: the embedded 10,000 Fashion-MNIST test images through all
# stages with the CPU preset. The epoch budget is what fits in about 20
# minutes on a 2-core machine with today's CPU kernels (small preset: about
# 215 s per epoch of 10,000 images); every value can be overridden, e.g.
# `make demo DEMO_PRETRAIN_EPOCHS=20`. No warm-up: the reference's per-epoch
# warm-up runs its first epoch at lr 0, which a 3-epoch budget cannot spare.
DEMO_BACKBONE        ?= small
DEMO_BATCH           ?= 256
DEMO_PRETRAIN_EPOCHS ?= 3
DEMO_PROJECT_EPOCHS  ?= 1
DEMO_FINETUNE_EPOCHS ?= 1
DEMO_LIMIT           ?=
DEMO_TRAIN = --batch-size $(DEMO_BATCH) $(if $(THREADS),--threads $(THREADS))

demo: $(DEMO_DIR)/finetune/embedding.parquet
	@echo "demo: the 2-D map is $<"

$(DEMO_DIR)/images.parquet: $(DEMO_DATA) | build
	@mkdir -p $(DEMO_DIR)
	$(BIN)/prep fashion-mnist --input data/fashion-mnist $(if $(DEMO_LIMIT),--limit $(DEMO_LIMIT)) --out $@

$(DEMO_DIR)/pretrain/model.safetensors: $(DEMO_DIR)/images.parquet | build
	$(BIN)/pretrain --images $< --out $(@D) --backbone $(DEMO_BACKBONE) \
		--epochs $(DEMO_PRETRAIN_EPOCHS) --warmup 0 $(DEMO_TRAIN)

$(DEMO_DIR)/project/model.safetensors: $(DEMO_DIR)/pretrain/model.safetensors
	$(BIN)/project --images $(DEMO_DIR)/images.parquet --from $(<D) --out $(@D) \
		--epochs $(DEMO_PROJECT_EPOCHS) $(DEMO_TRAIN)

$(DEMO_DIR)/finetune/embedding.parquet: $(DEMO_DIR)/project/model.safetensors
	$(BIN)/finetune --images $(DEMO_DIR)/images.parquet --from $(<D) --out $(@D) \
		--epochs $(DEMO_FINETUNE_EPOCHS) --warmup 0 $(DEMO_TRAIN)

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
