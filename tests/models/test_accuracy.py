"""Real accuracy: the CIFAR-10 test set (JPEG) through ONNX Runtime and PyTorch.

Expected figures are those measured with plain PyTorch on this JPEG set
(`../shared/README.md`); the published ones are for the lossless originals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.build import build_from_spec, load_weights
from models.manifest import get_spec
from models.prepare import ensure_models
from models.preprocessing import decode_and_preprocess
from models.weights import fetch_weights
from service.lesion.dataset import LabelledImages
from service.lesion.evaluation import load_runtime, predict, top1_error
from tests.helpers import CIFAR_SAMPLES, sample_label

MEASURED_ERROR = {
    "resnet20-cifar10": 0.190,
    "resnet32-cifar10": 0.174,
    "resnet44-cifar10": 0.173,
    "resnet56-cifar10": 0.168,
}
TOLERANCE = 0.0015  # 0.15 percentage points


@pytest.fixture(scope="module")
def all_cifar(repository: Path, mirror: Path, weights_cache: Path) -> Path:
    ensure_models(list(MEASURED_ERROR), repository, cache_dir=weights_cache, mirror=str(mirror))
    return repository


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MEASURED_ERROR))
def test_onnx_error_matches_pytorch_and_the_measured_figure(
    all_cifar: Path, cifar10_test_set: LabelledImages, mirror: Path, weights_cache: Path,
    name: str,
) -> None:
    runtime = load_runtime(all_cifar, name)
    served = predict(runtime, cifar10_test_set.inputs)

    spec = get_spec(name)
    network = load_weights(build_from_spec(spec), fetch_weights(spec, weights_cache, str(mirror)))
    with torch.no_grad():
        reference = torch.cat([
            network(torch.from_numpy(chunk)).argmax(1)
            for chunk in np.array_split(cifar10_test_set.inputs, 40)
        ]).numpy()

    assert (served == reference).all(), f"{int((served != reference).sum())} predictions differ"
    error = top1_error(served, cifar10_test_set.labels)
    print(f"{name}: top-1 error {error:.2%} on the JPEG test set")
    assert abs(error - MEASURED_ERROR[name]) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(MEASURED_ERROR))
def test_lossless_samples(all_cifar: Path, name: str) -> None:

    runtime = load_runtime(all_cifar, name)
    inputs = np.stack([
        decode_and_preprocess(p.read_bytes(), runtime.preprocessing) for p in CIFAR_SAMPLES
    ])
    labels = np.asarray([sample_label(p) for p in CIFAR_SAMPLES])
    assert len(inputs) == 20
    assert int((predict(runtime, inputs) == labels).sum()) >= 19
