# Set-up is automatic: each target creates .venv when it is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0

.PHONY: demo test test-all lint format bench lastfm clean-cache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first when none is installed (a plain `torch` requirement
	# would pull a multi-GB CUDA build); on GPU machines install your torch first.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)   ## SFT + evaluation on the embedded synthetic data with the tiny backbone
	$(BIN)/python -m recpo.train +experiment=demo

test: $(STAMP)   ## the default test suite (no slow, no gpu tests)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

test-all: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

lastfm: $(STAMP) ## SFT on LastFM with the tiny backbone (needs ../shared/data or RECPO_DATA_DIR)
	$(BIN)/python -m recpo.train +experiment=lastfm_sft backbone=tiny paths.data_dir=$${RECPO_DATA_DIR:-../shared/data}

clean-cache:
	rm -rf .cache
