#!/usr/bin/env bash
# GPU checks for a lent NVIDIA machine: Python 3.12, CUDA 13, only the CPU
# onnxruntime preinstalled, no network. Written without such a machine (none
# was lent to the session that wrote it), so it has never run: kept short and
# plain so that its first run is easy to follow and to fix.
#
# Usage: scripts/device_check.sh WHEEL_DIR [REPOSITORY]
#   WHEEL_DIR   folder with an onnxruntime-gpu wheel, plus wheels for whatever
#               else the project needs that the machine lacks (pip is offline)
#   REPOSITORY  an exported model repository holding resnet20-cifar10 and
#               resnet56-cifar10; without it both are exported here with random
#               weights (needs torch), which is enough to compare GPU with CPU
#
# Steps: a virtual environment that also sees the system's packages;
# onnxruntime-gpu from WHEEL_DIR, which shadows the system's CPU build (both
# install the module `onnxruntime`); the project with its `gpu` extra; the
# providers ONNX Runtime lists; one real CUDA session; `pytest -m gpu`, where a
# skip counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="${1:?usage: scripts/device_check.sh WHEEL_DIR [REPOSITORY]}"
REPOSITORY="${2:-}"
PYTHON="${PYTHON:-python3.12}"
VENV="${VENV:-/tmp/resnet-serve-gpu}"
MODELS=(resnet20-cifar10 resnet56-cifar10)
PIP=("$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS")

echo "== environment"
nvidia-smi -L
"$PYTHON" -m venv --system-site-packages "$VENV"
"${PIP[@]}" onnxruntime-gpu
"${PIP[@]}" --no-build-isolation -e ".[gpu]" pytest pytest-asyncio httpx

echo "== providers"
"$VENV/bin/python" -c 'import onnxruntime as ort; print(ort.__version__, ort.__file__)
print(ort.get_available_providers())'

if [[ -z "$REPOSITORY" ]]; then
    REPOSITORY="$(mktemp -d)/repository"
    echo "== exporting ${MODELS[*]} with random weights to $REPOSITORY"
    "$VENV/bin/resnet-serve" export --random-init --repository "$REPOSITORY" "${MODELS[@]}"
fi

echo "== one CUDA session"
"$VENV/bin/python" - "$REPOSITORY" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.repository import locate

files = locate(Path(sys.argv[1]), "resnet20-cifar10")
session = ort.InferenceSession(str(files.onnx_path), providers=["CUDAExecutionProvider"])
print("session providers:", session.get_providers())
# ONNX Runtime drops a provider that fails to load and runs on the CPU instead.
assert session.get_providers()[0] == "CUDAExecutionProvider", "CUDA did not load"
feeds = {"input": np.zeros((8, 3, 32, 32), np.float32),
         "block_mask": np.ones((8, 9), np.float32)}
logits, probabilities = session.run(None, feeds)
print("ran a batch of", len(logits), "on", session.get_providers()[0])
EOF

echo "== pytest -m gpu"
RESNET_SERVE_TEST_REPOSITORY="$REPOSITORY" RESNET_SERVE_TEST_REQUIRE_GPU=1 \
    "$VENV/bin/python" -m pytest -m gpu tests/service/test_gpu.py -p no:cacheprovider -rs
