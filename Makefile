# Reproducible set-up and checks. `make test` and `make demo` work on a fresh machine.
#
# torch: `torch==$(TORCH_VERSION)` is pinned in every pip call so no later step can swap it.
# With an NVIDIA GPU (nvidia-smi present) the ordinary PyPI build (CUDA) is used. On a CPU-only
# machine the small CPU build comes from TORCH_INDEX_URL if set, else from PyTorch's CPU index
# when it answers; offline (or behind a mirror) plain pip is used, with its own configuration.
# Nothing is fetched when the venv already has torch $(TORCH_VERSION). `make torch-index` prints
# the choice.
# sam2 is an sdist whose metadata pulls torchvision, so it is built against the installed torch,
# without dependencies and without the CUDA extension (see README, "Installation").

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
SAM2_VERSION ?= 1.1.0

BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
STAMP := $(VENV)/.stamp-install
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU_INDEX_URL ?= https://download.pytorch.org/whl/cpu
CURL ?= curl
# Shell code that prints the index URL torch is installed from (empty: pip's default).
TORCH_INDEX_CHOICE = \
	if [ -n "$(HAS_GPU)" ]; then :; \
	elif [ -n "$(TORCH_INDEX_URL)" ]; then echo "$(TORCH_INDEX_URL)"; \
	elif $(BIN)/python -c "import torch, sys; \
		sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" >/dev/null 2>&1; then :; \
	elif $(CURL) -sfI --max-time 5 "$(TORCH_CPU_INDEX_URL)/" >/dev/null 2>&1; then \
		echo "$(TORCH_CPU_INDEX_URL)"; \
	fi

.PHONY: install torch-index test lint unit integration run demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	index=$$($(TORCH_INDEX_CHOICE)); \
	echo "torch $(TORCH_VERSION) ($(if $(HAS_GPU),GPU present: PyPI build,CPU)) from $${index:-pip's default index}"; \
	$(PIP) install --no-cache-dir $${index:+--index-url $$index} torch==$(TORCH_VERSION)
	$(PIP) install --no-cache-dir torch==$(TORCH_VERSION) -e '.[test]'
	SAM2_BUILD_CUDA=0 $(PIP) install --no-cache-dir --no-deps --no-build-isolation \
		sam2==$(SAM2_VERSION)
	$(BIN)/python -c "import torch, sam2.modeling.sam2_base, peft; print('torch', torch.__version__)"
	touch $@

torch-index:
	@$(TORCH_INDEX_CHOICE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

test: lint
	$(BIN)/pytest -q

# The service on embedded defaults: backend + worker + beat, SQLite and a filesystem broker under
# UNSAMV2_DATA_DIR (default ./data). Without weights, the backend downloads the UnSAMv2+ checkpoint
# on first start (UNSAMV2_AUTO_DOWNLOAD=false turns that off). Ctrl-C stops it.
run: install
	$(BIN)/unsamv2 up

# A one-shot segmentation on embedded defaults: the example image, the tiny test model with random weights
# (no download needed; the masks are noise until real weights are given with --checkpoint).
demo: install
	$(BIN)/unsamv2 segment examples/scene.png --config test-tiny --random-weights \
		--point 160,120 --point 20,20,0 --granularity 0.2 1.0 --out out/demo/mask.png

bench: install
	$(BIN)/unsamv2 bench click

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache out
