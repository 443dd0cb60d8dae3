# t-SimCNE pipeline. `make help` lists the targets.
#
# Every stage is a command in target/release (a link to the one executable,
# tsimcne, made by `make build`) that talks to the others only
# through files. A run lives in runs/<dataset>/<run>/ (the demo in
# runs/demo/). A stage reruns when one of its input files changes or when its
# parameters do: each stage's parameters are kept in a stamp file,
# <run dir>/.<stage>.params, which is rewritten only when they differ, and
# the stage's output depends on it. Training stages go through
# pipelines/stage.sh, which resumes an interrupted stage from its checkpoint,
# starts a changed one over, and copies a stage that another run of the same
# dataset already made with the same settings and inputs.
#
# The dataset targets (cifar10, cifar100, fashion-mnist, demo, tiny) run the
# `pipeline` target below in a sub-make with DATASET set.

CARGO   ?= cargo
PROFILE ?= release
# DEVICE=cuda (or cuda:N) runs the CUDA build, which scripts/build-cuda.sh
# makes in target/cuda (release profile).
# The CPU build follows CARGO_TARGET_DIR when it is set.
BIN     ?= $(if $(CUDA),target/cuda/release,$(or $(CARGO_TARGET_DIR),target)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE)))
RUNS    ?= runs
THREADS ?=
DEVICE  ?= cpu
# CONV_MATH=exact: a GPU's convolutions in exact f32 (the CPU's results
# within float rounding) instead of TF32 tensor cores, the default; bf16:
# bf16 activations, not yet run on a GPU (--conv-math).
CONV_MATH ?=
# GPU_PATH=next: also the GPU kernels not yet run on a GPU (--gpu-path).
GPU_PATH ?=
CUDA    := $(filter cuda%,$(DEVICE))
DVC       ?= dvc
SNAKEMAKE ?= snakemake

DATASETS := cifar10 cifar100 fashion-mnist demo tiny
STAGES   := prep pretrain project finetune evaluate explore

.PHONY: help build test bench bench-prep bench-prep-folder bench-augment bench-evaluate bench-train bench-explore clean \
	pipeline pipeline-dir pipeline-estimate $(STAGES:%=pipeline-%) \
	pipeline-test pipeline-test-make pipeline-test-dvc pipeline-test-snakemake \
	$(DATASETS) $(foreach d,$(DATASETS),$(STAGES:%=$(d)-%) $(d)-dir)

help:
	@echo "make cifar10         the paper's CIFAR-10 run: prep --download, pretrain 1000, project 50, finetune 450 epochs,"
	@echo "                     batch 1024, resnet18, then evaluate (kNN@15, 10k hold-out); meant for DEVICE=cuda"
	@echo "make cifar100        the same on CIFAR-100 (evaluated on fine and coarse labels)"
	@echo "make fashion-mnist   the same on the 70,000 Fashion-MNIST images (FMNIST_DIR=$(FMNIST_DIR))"
	@echo "make demo            the embedded Fashion-MNIST test set with the CPU preset, into $(RUNS)/demo/"
	@echo "make tiny            300 Fashion-MNIST images, tiny network, one epoch per stage (seconds)"
	@echo "make <dataset>-<stage>  run up to one stage ($(STAGES)); make <dataset>-dir prints the run folder"
	@echo "make test            run the test suite (what CI runs)"
	@echo "make bench           run the benchmarks (bench-prep, bench-prep-folder, bench-augment, bench-evaluate, bench-train, bench-explore)"
	@echo "make build           build the release binaries (DEVICE=cuda: the CUDA build, scripts/build-cuda.sh)"
	@echo "make pipeline-test   the make, DVC and Snakemake pipelines on tiny data (part of make test)"
	@echo "make clean           remove $(RUNS)/ (every run folder)"
	@echo "Override any hyperparameter: make cifar10 PRETRAIN_EPOCHS=500 BATCH=512 DEVICE=cuda THREADS=8"
	@echo "(see docs/pipelines.md); runs go to $(RUNS)/<dataset>/<run>, RUN=name picks the folder."

build:
ifneq ($(CUDA),)
	CARGO_TARGET_DIR=target/cuda scripts/build-cuda.sh
else
	$(CARGO) build --profile $(PROFILE) --workspace --bins
	$(BIN)/tsimcne --link-stages $(BIN)
endif

# The tests build in the release profile, as the demo does: one compilation
# serves both (and the tests of training code need optimisation anyway).
test:
	$(CARGO) test --profile $(PROFILE) --workspace
	$(MAKE) --no-print-directory pipeline-test

bench: bench-prep bench-prep-folder bench-augment bench-evaluate bench-train bench-explore

bench-prep:
	bench/prep.sh

# prep folder on 20,000 photo-like JPEGs beside a Pillow loop (and torchvision when installed).
bench-prep-folder:
	bench/prep_folder.sh 2

# The CPU training step beside PyTorch's (when python3 has torch), with ratios.
bench-train:
	bench/train.sh 2

# explore on 70,000 Fashion-MNIST points and a million synthetic ones, and
# its page in headless Chromium.
bench-explore:
	bench/explore.sh 2

# evaluate beside scikit-learn/numpy on 70,000 Fashion-MNIST points.
bench-evaluate:
	bench/evaluate.sh 2

# Our augmentations beside torchvision's (when python3 has torchvision).
bench-augment:
	$(CARGO) run --release -q -p tsimcne-augment --example throughput 2
	-python3 bench/augment_torchvision.py 2

clean:
	rm -rf $(RUNS)

# ---------------------------------------------------------------------------
# Pipeline tests on tiny data: the make chain, then DVC and Snakemake when
# they are installed (`.ci/run` installs them; DVC=… SNAKEMAKE=… name them).

pipeline-test: pipeline-test-make pipeline-test-dvc pipeline-test-snakemake

pipeline-test-make pipeline-test-dvc pipeline-test-snakemake: build
	BIN=$(BIN) DVC=$(DVC) SNAKEMAKE=$(SNAKEMAKE) pipelines/check.sh $(@:pipeline-test-%=%)

# ---------------------------------------------------------------------------
# Dataset targets: `make cifar10`, `make cifar10-pretrain`, `make cifar10-dir`.

$(DATASETS):
	@$(MAKE) --no-print-directory pipeline DATASET=$@

$(foreach d,$(DATASETS),$(STAGES:%=$(d)-%) $(d)-dir):
	@$(MAKE) --no-print-directory pipeline-$(lastword $(subst -, ,$@)) \
		DATASET=$(patsubst %-$(lastword $(subst -, ,$@)),%,$@)

# ---------------------------------------------------------------------------
# Hyperparameters. Defaults (DEF_*) are the paper's recipe; the dataset
# sections below change a few. Every one can be set on the command line.

FMNIST_DIR ?= /usr/share/datasets/fashion-mnist

DEF_DATA             :=
DEF_LIMIT            :=
DEF_LIMIT_SEED       := 0
DEF_PREP_FLAGS       :=
DEF_BACKBONE         := resnet18
DEF_BATCH            := 1024
DEF_SEED             := 0
DEF_LOSS             := cauchy
DEF_NORMALIZE        := none
DEF_OUT_DIM          := 128
DEF_PRETRAIN_EPOCHS  := 1000
DEF_PRETRAIN_WARMUP  := 10
DEF_PRETRAIN_LR      :=
DEF_PRETRAIN_FLAGS   :=
DEF_MAP_DIM          := 2
DEF_PROJECT_EPOCHS   := 50
DEF_PROJECT_WARMUP   := 0
DEF_PROJECT_LR       :=
DEF_PROJECT_FLAGS    :=
DEF_FINETUNE_EPOCHS  := 450
DEF_FINETUNE_WARMUP  := 10
DEF_FINETUNE_LR      :=
DEF_FINETUNE_FLAGS   :=
# Augmentations and positives of all three training stages (empty: the
# recipe's; see `pretrain --help`: --crop-min, --jitter-p, --knn-positives).
DEF_AUGMENT          :=
# Evaluation: the paper's protocol, kNN@15 on a stratified random hold-out
# of 10,000 points (5 splits; an empty TEST_SIZE is evaluate's default,
# 10,000 or 20% of a smaller set), plus neighbour preservation against the
# pixels and the pretrained 128-D output (`head`; `backbone` is the 512-D
# features; any other SPEC of `evaluate --reference` is passed through).
DEF_K          := 15
DEF_REPEATS    := 5
DEF_TEST_SIZE  := 10000
DEF_SAMPLE     :=
DEF_EVAL_SEED  := 0
DEF_REFERENCES := pixels head
DEF_EVAL_FLAGS :=

# The demo's CPU preset, for about 9 minutes of training on 2 cores: 14x14 images, the
# small network, 40 + 5 + 200 epochs without warm-up, a PCA start of the map,
# fine-tuning at 0.05 with the stem, layer1 and layer2 frozen (their output
# computed once per image and flip), and (opt-in, not t-SimCNE) nearest images as
# positives with a fixed map spread in the 2-D stages. Why each value:
# docs/budget-study.md. DEMO_AUGMENT= DEMO_FINETUNE_AUGMENT= DEMO_2D_AUGMENT=
# DEMO_FINETUNE_FREEZE=0 runs t-SimCNE's own positives, loss and fine-tuning.
DEMO_SIZE            ?= 14
DEMO_BACKBONE        ?= small
DEMO_BATCH           ?= 256
DEMO_PRETRAIN_EPOCHS ?= 40
DEMO_PROJECT_EPOCHS  ?= 5
DEMO_FINETUNE_EPOCHS ?= 200
DEMO_FINETUNE_LR     ?= 0.05
DEMO_AUGMENT         ?= --knn-positives 15
DEMO_FINETUNE_AUGMENT ?= --knn-positives 10
DEMO_2D_AUGMENT      ?= --knn-space joint --crop-min 1 --jitter-p 0 --map-scale 11
# Freezing is a CPU trade (the cached path runs on our CPU kernels; on a GPU
# the frozen layers would run through candle's ops): 0 elsewhere.
DEMO_FINETUNE_FREEZE ?= $(if $(filter cpu,$(DEVICE)),2,0)
DEMO_LIMIT           ?=

# Hyperparameters that name a run (runs/<dataset>/<run>); the evaluation
# settings, DEVICE, CONV_MATH, GPU_PATH, THREADS and CHECKPOINT_EVERY do not.
RUN_VARS := DATA LIMIT LIMIT_SEED PREP_FLAGS BACKBONE BATCH SEED LOSS NORMALIZE AUGMENT \
	OUT_DIM PRETRAIN_EPOCHS PRETRAIN_WARMUP PRETRAIN_LR PRETRAIN_FLAGS \
	MAP_DIM PROJECT_EPOCHS PROJECT_WARMUP PROJECT_LR PROJECT_FLAGS \
	FINETUNE_EPOCHS FINETUNE_WARMUP FINETUNE_LR FINETUNE_FLAGS
EVAL_VARS := K REPEATS TEST_SIZE SAMPLE EVAL_SEED REFERENCES EVAL_FLAGS

# VAR ?= $(DEF_VAR) for each of them.
$(foreach v,$(RUN_VARS) $(EVAL_VARS),$(eval $(v) ?= $$(DEF_$(v))))

ifdef DATASET
ifeq ($(DATASET),cifar10)
  PREP_SOURCE    := cifar10 --download
  DATA_FILES     := $(wildcard $(or $(DATA),data/cifar-10-binary.tar.gz))
  N_IMAGES       := 60000
  DEF_NORMALIZE  := cifar10
  RUN_DEFAULT    := paper
else ifeq ($(DATASET),cifar100)
  PREP_SOURCE    := cifar100 --download
  DATA_FILES     := $(wildcard $(or $(DATA),data/cifar-100-binary.tar.gz))
  N_IMAGES       := 60000
  DEF_NORMALIZE  := cifar100
  RUN_DEFAULT    := paper
else ifeq ($(DATASET),fashion-mnist)
  PREP_SOURCE    := fashion-mnist
  DEF_DATA       := $(FMNIST_DIR)
  DATA_FILES     := $(wildcard $(DATA)/*-ubyte*)
  N_IMAGES       := 70000
  RUN_DEFAULT    := paper
else ifeq ($(DATASET),demo)
  PREP_SOURCE    := fashion-mnist
  DEF_DATA       := data/fashion-mnist
  DATA_FILES     := $(wildcard $(DATA)/*-ubyte*)
  N_IMAGES       := 10000
  DEF_LIMIT      := $(DEMO_LIMIT)
  DEF_BACKBONE   := $(DEMO_BACKBONE)
  DEF_BATCH      := $(DEMO_BATCH)
  DEF_PRETRAIN_EPOCHS := $(DEMO_PRETRAIN_EPOCHS)
  DEF_PROJECT_EPOCHS  := $(DEMO_PROJECT_EPOCHS)
  DEF_FINETUNE_EPOCHS := $(DEMO_FINETUNE_EPOCHS)
  DEF_PRETRAIN_WARMUP := 0
  DEF_FINETUNE_WARMUP := 0
  DEF_FINETUNE_LR     := $(DEMO_FINETUNE_LR)
  DEF_PREP_FLAGS      := $(if $(DEMO_SIZE),--size $(DEMO_SIZE))
  IMAGE_SIDE     := $(DEMO_SIZE)
  DEF_PRETRAIN_FLAGS  := $(DEMO_AUGMENT)
  DEF_PROJECT_FLAGS   := --init pca $(DEMO_AUGMENT) $(DEMO_2D_AUGMENT)
  DEF_FINETUNE_FLAGS  := $(DEMO_FINETUNE_AUGMENT) $(DEMO_2D_AUGMENT) \
	$(if $(filter-out 0,$(DEMO_FINETUNE_FREEZE)),--freeze-layers $(DEMO_FINETUNE_FREEZE))
  DEF_TEST_SIZE  :=
  RUN_DIR        := $(RUNS)/demo
else ifeq ($(DATASET),tiny)
  PREP_SOURCE    := fashion-mnist
  DEF_DATA       := $(if $(wildcard $(FMNIST_DIR)),$(FMNIST_DIR),data/fashion-mnist)
  DATA_FILES     := $(wildcard $(DATA)/*-ubyte*)
  N_IMAGES       := 70000
  DEF_LIMIT      := 300
  DEF_BACKBONE   := tiny
  DEF_BATCH      := 64
  DEF_PRETRAIN_EPOCHS := 1
  DEF_PROJECT_EPOCHS  := 1
  DEF_FINETUNE_EPOCHS := 1
  DEF_PRETRAIN_WARMUP := 0
  DEF_FINETUNE_WARMUP := 0
  DEF_TEST_SIZE  :=
  DEF_REPEATS    := 2
  RUN_DEFAULT    := default
else
  $(error unknown DATASET '$(DATASET)'; one of: $(DATASETS))
endif

# The run folder: RUN if given, else `paper` (or `default`) when every
# hyperparameter has its default, else the changed ones, e.g.
# `batch512-pretrain_epochs500`.
differs = $(or $(subst |$(strip $(1))|,,|$(strip $(2))|),$(subst |$(strip $(2))|,,|$(strip $(1))|))
CHANGED := $(strip $(foreach v,$(RUN_VARS),$(if $(call differs,$($(v)),$(DEF_$(v))),$(v))))
RUN_AUTO := $(shell RUN_DEFAULT=$(RUN_DEFAULT) pipelines/run-name.sh $(foreach v,$(CHANGED),'$(v)=$(strip $($(v)))'))
RUN_NAME := $(or $(RUN),$(RUN_AUTO))
RUN_DIR  ?= $(RUNS)/$(DATASET)/$(RUN_NAME)
D := $(RUN_DIR)

# What each stage is run with. The stamps hold everything but the paths and
# DEVICE, CONV_MATH, GPU_PATH, THREADS and CHECKPOINT_EVERY (which do not change a
# result beyond float or TF32 rounding).
TRAIN_COMMON  = $(strip --batch-size $(BATCH) --seed $(SEED) --loss $(LOSS) $(AUGMENT))
PREP_ARGS     = $(strip $(PREP_SOURCE) $(if $(DATA),--input $(DATA)) \
	$(if $(LIMIT),--limit $(LIMIT) --seed $(LIMIT_SEED)) $(PREP_FLAGS))
PRETRAIN_ARGS = $(strip --backbone $(BACKBONE) --epochs $(PRETRAIN_EPOCHS) --warmup $(PRETRAIN_WARMUP) \
	$(if $(PRETRAIN_LR),--lr $(PRETRAIN_LR)) --out-dim $(OUT_DIM) --normalize $(NORMALIZE) \
	$(TRAIN_COMMON) $(PRETRAIN_FLAGS))
PROJECT_ARGS  = $(strip --epochs $(PROJECT_EPOCHS) --warmup $(PROJECT_WARMUP) \
	$(if $(PROJECT_LR),--lr $(PROJECT_LR)) --out-dim $(MAP_DIM) $(TRAIN_COMMON) $(PROJECT_FLAGS))
FINETUNE_ARGS = $(strip --epochs $(FINETUNE_EPOCHS) --warmup $(FINETUNE_WARMUP) \
	$(if $(FINETUNE_LR),--lr $(FINETUNE_LR)) $(TRAIN_COMMON) $(FINETUNE_FLAGS))
EVAL_ARGS     = $(strip --k $(K) --repeats $(REPEATS) $(if $(TEST_SIZE),--test-size $(TEST_SIZE)) --seed $(EVAL_SEED) \
	$(if $(SAMPLE),--sample $(SAMPLE)) \
	$(foreach r,$(REFERENCES),--reference $(if $(filter head backbone,$(r)),$(D)/pretrain/features.parquet:$(r),$(r))) \
	$(EVAL_FLAGS))
RUNTIME_ARGS  = $(strip --device $(DEVICE) $(if $(CONV_MATH),--conv-math $(CONV_MATH)) \
	$(if $(GPU_PATH),--gpu-path $(GPU_PATH)) \
	$(if $(THREADS),--threads $(THREADS)) \
	$(if $(CHECKPOINT_EVERY),--checkpoint-every $(CHECKPOINT_EVERY)))

# Write <run>/.<stage>.params when its content differs (at parse time, so
# that make then compares plain modification times).
stamp = $(shell mkdir -p $(D) && f=$(D)/.$(1).params && new='$(strip $(2))' && \
	{ [ -f $$f ] && [ "$$(cat $$f)" = "$$new" ] || printf '%s\n' "$$new" > $$f; })
ifeq ($(filter pipeline-dir,$(MAKECMDGOALS)),)
  $(call stamp,prep,$(PREP_ARGS))
  $(call stamp,pretrain,$(PRETRAIN_ARGS))
  $(call stamp,project,$(PROJECT_ARGS))
  $(call stamp,finetune,$(FINETUNE_ARGS))
  $(call stamp,evaluate,$(EVAL_ARGS))
endif

# CPU runs say first how long their training will take, timed on this
# machine (`estimate`, a second for the demo), unless the training is done.
comma := ,
ESTIMATE = $(if $(filter cpu,$(DEVICE)),$(if $(wildcard $(D)/finetune/config.json),,1))

REUSE ?= 1
STAGE_SH = $(strip pipelines/stage.sh $(if $(REUSE),$(foreach c,$(filter-out $(D)/$(1),$(wildcard $(RUNS)/$(DATASET)/*/$(1))),--reuse-from $(c))))
# The binaries are built first (a no-op when up to date); NO_BUILD=1 skips it.
BUILT := $(if $(NO_BUILD),,build)

pipeline: $(D)/explore/map.html
pipeline-prep: $(D)/images.parquet
pipeline-pretrain: $(D)/pretrain/config.json
pipeline-project: $(D)/project/config.json
pipeline-finetune: $(D)/finetune/config.json
pipeline-evaluate: $(D)/evaluate/metrics.json
pipeline-explore: $(D)/explore/map.html
pipeline-dir:
	@echo $(D)

$(D)/images.parquet: $(D)/.prep.params $(DATA_FILES) | $(BUILT)
	$(BIN)/prep $(PREP_ARGS) --out $@

pipeline-estimate: $(D)/images.parquet | $(BUILT)
	$(if $(ESTIMATE),@$(BIN)/estimate --images $< --label $(DATASET) --backbone $(BACKBONE) \
		--batch-size $(BATCH) --epochs $(PRETRAIN_EPOCHS)$(comma)$(PROJECT_EPOCHS)$(comma)$(FINETUNE_EPOCHS) \
		--out-dim $(OUT_DIM) --map-dim $(MAP_DIM) $(if $(THREADS),--threads $(THREADS)) -- $(FINETUNE_FLAGS))

$(D)/pretrain/config.json: $(D)/images.parquet $(D)/.pretrain.params | $(BUILT) pipeline-estimate
	$(call STAGE_SH,pretrain) $(BIN)/pretrain --images $< --out $(@D) $(PRETRAIN_ARGS) $(RUNTIME_ARGS)

$(D)/project/config.json: $(D)/pretrain/config.json $(D)/images.parquet $(D)/.project.params | $(BUILT) pipeline-estimate
	$(call STAGE_SH,project) $(BIN)/project --images $(D)/images.parquet --from $(<D) --out $(@D) \
		$(PROJECT_ARGS) $(RUNTIME_ARGS)

$(D)/finetune/config.json: $(D)/project/config.json $(D)/images.parquet $(D)/.finetune.params | $(BUILT) pipeline-estimate
	$(call STAGE_SH,finetune) $(BIN)/finetune --images $(D)/images.parquet --from $(<D) --out $(@D) \
		$(FINETUNE_ARGS) $(RUNTIME_ARGS)

$(D)/evaluate/metrics.json: $(D)/finetune/config.json $(D)/pretrain/config.json $(D)/images.parquet \
		$(D)/.evaluate.params | $(BUILT)
	$(BIN)/evaluate --embedding $(D)/finetune/embedding.parquet --images $(D)/images.parquet \
		--out $(@D) $(EVAL_ARGS) $(if $(THREADS),--threads $(THREADS))
	@echo "$(DATASET): the map is $(D)/finetune/embedding.parquet, drawn in $(@D)/map.png; metrics in $@"

# The interactive map: one HTML file, neighbours also in the backbone's space.
$(D)/explore/map.html: $(D)/evaluate/metrics.json $(D)/finetune/config.json $(D)/pretrain/config.json \
		$(D)/images.parquet | $(BUILT)
	$(BIN)/explore --embedding $(D)/finetune/embedding.parquet --images $(D)/images.parquet \
		--features $(D)/pretrain/features.parquet:backbone --metrics $< --out $(@D) \
		$(if $(THREADS),--threads $(THREADS))
	@echo "$(DATASET): open $@ in a browser to explore the map"
endif
