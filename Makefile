# MFM-Mapper. Set-up is two commands: `make demo` and `make test` (each creates .venv when needed).
# The paper's full run: `make extract`, `make train`, `make generate` (paths and params in stages.yaml).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
V2A := $(VENV)/bin/v2a
CONFIG ?= -c stages.yaml
DEMO := -c stages.yaml -c configs/demo.yaml
WORKERS ?= 1
# `make status` after `make demo` shows the demo (demo/ is there and the full run's cache/ and data/ are not);
# CONFIG=... on the command line always wins; `make demo-status` is always the demo's.
FULL_RUN := $(filter command line environment,$(origin CONFIG))$(wildcard cache data)
STATUS_CONFIG := $(if $(FULL_RUN),$(CONFIG),$(if $(wildcard demo),$(DEMO),$(CONFIG)))
TORCH ?= torch==2.13.0

.PHONY: help install demo demo-mappers test extract train generate evaluate reproduce stage status bench \
        demo-status clean-demo experiment ablations demo-ablations weights check smoke-full

help:
	@echo "make demo      tiny models on synthetic clips, end to end (writes demo/)"
	@echo "make demo-mappers  the demo's MFM-, Diff- and V2A-Mapper experiments (demo/runs/NAME, demo/outputs/NAME)"
	@echo "make test      the test suite (offline, CPU)"
	@echo "make extract   frames + CAVP + TimeChat + AudioMAE features into the cache (stages.yaml)"
	@echo "make train     train the GPT-2 mapper on the cache"
	@echo "make generate  generate audio + videos for the test split"
	@echo "make evaluate  the paper's metrics, Table-1 report and HTML gallery"
	@echo "make reproduce extract -> train -> generate -> evaluate with stages.yaml (GPU, released weights)"
	@echo "make stage STAGE=timechat [FORCE=1]   rerun one stage"
	@echo "make status    which stages are fresh or stale, and why (the demo's when only demo/ exists)"
	@echo "make demo-status   the same for the demo (demo/)"
	@echo "make bench     benchmarks (prints figures and ratios)"
	@echo "make experiment NAME=cavp-only   one named experiment (configs/experiments/) -> runs/NAME, outputs/NAME"
	@echo "make ablations every experiment + one combined report (outputs/ablations/report.md)"
	@echo "make demo-ablations   the same with the demo's tiny models on CPU (demo/outputs/ablations/)"
	@echo "make weights   download every checkpoint of the full run (v2a weights fetch; manifest v2a/weights.yaml)"
	@echo "make check     preflight of the full run: inputs, weights (keys/shapes), devices (v2a check)"
	@echo "make smoke-full  every stage and metric at full size, random weights, 3 x 10 s clips, CPU (docs/full-size.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# pip's output goes to $(VENV)/pip.log and is shown only when a step fails
	$(PY) -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	# torch first, the release CI tests: the CPU wheel on disk here, never a multi-GB CUDA download; pyproject.toml
	# asks for a range (docs/install.md), which it satisfies. TORCH='torch==2.14.1' tries another release.
	$(PY) -m pip install -q '$(TORCH)' >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PY) -m pip install -q -e '.[test]' >> $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $@

install: $(VENV)/.installed

demo/videos/labels.csv: | $(VENV)/.installed
	$(V2A) demo-data demo/videos --n 12 --seed 0

demo: install demo/videos/labels.csv
	$(V2A) $(DEMO) run evaluate --workers 2
	$(V2A) $(DEMO) export demo/pipeline
	$(V2A) $(DEMO) generate --mapper demo/pipeline --whole --out demo/outputs/pipeline \
		$$(ls demo/videos/*.mp4 | head -n 1)
	$(V2A) $(DEMO) status
	@echo "demo done: open demo/outputs/generated/ (wav, video, png), demo/outputs/evaluation/gallery/index.html,"
	@echo "the exported pipeline demo/pipeline/ (README.md: its model card) and what it made: demo/outputs/pipeline/"

# Diff-Mapper and V2A-Mapper beside MFM-Mapper on the demo's cache and clips: the experiments of those names with the
# demo's settings (configs/demo.yaml's experiments overlay), so the same runs as `make demo-ablations` makes in the
# same folders (demo/runs/NAME, demo/outputs/NAME): whichever comes second reuses them, nothing is recomputed.
demo-mappers: install demo/videos/labels.csv
	$(V2A) $(DEMO) run evaluate --workers 2 --experiment mfm-mapper
	$(V2A) $(DEMO) run evaluate --experiment diff-mapper
	$(V2A) $(DEMO) run evaluate --experiment v2a-mapper
	$(V2A) $(DEMO) experiments
	@echo "rows: demo/outputs/{mfm-mapper,diff-mapper,v2a-mapper}/evaluation/table.md"

test: install
	$(PY) -m pytest tests

extract: install
	$(V2A) $(CONFIG) run extract --workers $(WORKERS)

train: install
	$(V2A) $(CONFIG) run train

generate: install
	$(V2A) $(CONFIG) run generate

evaluate: install
	$(V2A) $(CONFIG) run evaluate

# The paper end to end on a GPU machine: stages.yaml's paths point at VGGSound/VisualSound and the weights.
reproduce: install
	$(V2A) $(CONFIG) check  # every stage's inputs, weights and devices first, not 20 hours in
	$(V2A) $(CONFIG) run extract --workers $(WORKERS)
	$(V2A) $(CONFIG) run train
	$(V2A) $(CONFIG) run generate
	$(V2A) $(CONFIG) run evaluate
	@cat outputs/evaluation/table.md

stage: install
	@test -n "$(STAGE)" || (echo "usage: make stage STAGE=<name> [FORCE=1]"; exit 2)
	$(V2A) $(CONFIG) stage $(STAGE) $(if $(FORCE),--force) --workers $(WORKERS)

status: install
	$(V2A) $(STATUS_CONFIG) status

demo-status: install
	$(V2A) $(DEMO) status

weights: install
	$(V2A) $(CONFIG) weights fetch

check: install
	$(V2A) $(CONFIG) check

# Full-size dry run on the CPU: released sizes, random weights, 3 synthetic 10 s clips, every stage (no downloads).
smoke-full: install
	$(PY) benchmarks/smoke_full.py

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

experiment: install
	@test -n "$(NAME)" || (echo "usage: make experiment NAME=<preset> (v2a experiments lists them)"; exit 2)
	$(V2A) $(CONFIG) run evaluate --experiment $(NAME)

ablations: install
	$(V2A) $(CONFIG) ablations
	@cat outputs/ablations/report.md

demo-ablations: install demo/videos/labels.csv
	$(V2A) $(DEMO) ablations
	@echo "report: demo/outputs/ablations/report.md"

clean-demo:
	rm -rf demo
