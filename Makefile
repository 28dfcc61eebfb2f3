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

# Images, built with docker or podman (whichever answers): resnet-serve:cpu and
# resnet-serve:gpu. IMAGE_MODELS=a,b picks the models baked in. With
# RESNET_SERVE_WEIGHTS_MIRROR set, the build reads the weights and this
# machine's local wheels over loopback (scripts/container_build.py).
IMAGE_MODELS ?=
IMAGE_FLAGS := $(if $(IMAGE_MODELS),--models $(IMAGE_MODELS),)

docker-cpu:
	$(PYTHON) scripts/container_build.py cpu $(IMAGE_FLAGS)

docker-gpu:
	$(PYTHON) scripts/container_build.py gpu $(IMAGE_FLAGS)

clean:
	rm -rf $(VENV) models/repository .pytest_cache

# Ten minutes of mixed traffic above capacity against a real server, with a
# report (docs/soak.md); not part of `make test`. SOAK_ARGS=--duration-s 60 for less.
SOAK_ARGS ?=
soak: install
	$(BIN)/python scripts/soak.py --report docs/soak.md $(SOAK_ARGS)

# Throughput and latency against raw ONNX Runtime, measured back to back in one
# run (docs/benchmarks.md): the protocols (perf_analyzer from ../shared/tools
# and wrk, installed from Debian's packages when missing and run as root), then
# the sub-networks. Run it on a quiet machine. BENCH_ARGS=--help,
# SUBNETWORK_BENCH_ARGS=--help.
BENCH_ARGS ?=
SUBNETWORK_BENCH_ARGS ?=
bench: install
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
	  || echo "wrk is missing: apt-get install wrk"
	$(BIN)/python -m scripts.bench_protocols $(BENCH_ARGS)
	$(BIN)/python scripts/bench_subnetwork.py $(SUBNETWORK_BENCH_ARGS)
