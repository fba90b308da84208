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

.PHONY: help install demo demo-mappers test extract train generate evaluate reproduce stage status bench \
        clean-demo experiment ablations demo-ablations weights check smoke-full

help:
	@echo "make demo      tiny models on synthetic clips, end to end (writes demo/)"
	@echo "make demo-mappers  the demo's Diff-Mapper and V2A-Mapper runs (demo/runs/NAME, demo/outputs/NAME)"
	@echo "make test      the test suite (offline, CPU)"
	@echo "make extract   frames + CAVP + TimeChat + AudioMAE features into the cache (stages.yaml)"
	@echo "make train     train the GPT-2 mapper on the cache"
	@echo "make generate  generate audio + videos for the test split"
	@echo "make evaluate  the paper's metrics, Table-1 report and HTML gallery"
	@echo "make reproduce extract -> train -> generate -> evaluate with stages.yaml (GPU, released weights)"
	@echo "make stage STAGE=timechat [FORCE=1]   rerun one stage"
	@echo "make status    which stages are fresh or stale, and why"
	@echo "make bench     benchmarks (prints figures and ratios)"
	@echo "make experiment NAME=cavp-only   one named experiment (configs/experiments/) -> runs/NAME, outputs/NAME"
	@echo "make ablations every experiment + one combined report (outputs/ablations/report.md)"
	@echo "make demo-ablations   the same with the demo's tiny models on CPU (demo/outputs/ablations/)"
	@echo "make weights   download every checkpoint of the full run (v2a weights fetch; manifest v2a/weights.yaml)"
	@echo "make check     preflight of the full run: inputs, weights (keys/shapes), devices (v2a check)"
	@echo "make smoke-full  every stage and metric at full size, random weights, 3 x 10 s clips, CPU (docs/full-size.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk, never a multi-GB CUDA download
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
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

# Diff-Mapper and V2A-Mapper on the demo's cache and clips, each in its own runs/outputs folder
demo-mappers: demo
	$(V2A) -c stages.yaml -c configs/diff-mapper.yaml -c configs/demo.yaml --set paths.runs=demo/runs/diff-mapper \
		--set paths.outputs=demo/outputs/diff-mapper run evaluate
	$(V2A) -c stages.yaml -c configs/v2a-mapper.yaml -c configs/demo.yaml --set paths.runs=demo/runs/v2a-mapper \
		--set paths.outputs=demo/outputs/v2a-mapper run evaluate
	@echo "rows: demo/outputs/{evaluation,diff-mapper/evaluation,v2a-mapper/evaluation}/table.md"

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
	$(V2A) $(CONFIG) status

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
