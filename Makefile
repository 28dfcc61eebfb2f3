# resnet-serve: `make serve` serves the default models, `make test` runs the tests.
# Both create the virtual environment on first use.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# `pip install torch==2.13.0` takes the CPU wheel on the project's machines. On
# other Linux hosts add TORCH_INDEX=https://download.pytorch.org/whl/cpu to
# avoid the much larger CUDA build (exporting needs no GPU).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

# onnxruntime and onnxruntime-gpu install the same module: exactly one of them.
ORT_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: serve test install bench soak docker-cpu docker-gpu clean

$(BIN)/python:
	@$(PYTHON) --version >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-$(ORT_EXTRA): pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_TORCH_FLAGS) -e '.[$(ORT_EXTRA),export,test]' '$(TORCH_SPEC)'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(VENV)/.installed-$(ORT_EXTRA)

serve: install
	$(BIN)/resnet-serve serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) models/repository .pytest_cache
