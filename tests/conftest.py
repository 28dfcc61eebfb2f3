"""Session fixtures: the two default models exported from the weights mirror, and
the CIFAR-10 test set decoded once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.manifest import CIFAR_PREPROCESSING, LABELS_DIR, read_labels
from service.lesion.dataset import LabelledImages, load_folder
from tests.helpers import CIFAR_TEST_JPEG, ServerProcess, running_server, weights_mirror

DEFAULT_MODELS = ("resnet20-cifar10", "resnet56-cifar10")


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = weights_mirror()
    if not (path / "cifar10").is_dir():
        pytest.skip(f"no weights mirror at {path} (set RESNET_SERVE_WEIGHTS_MIRROR)")
    return path


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights-cache")


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, mirror: Path, weights_cache: Path) -> Path:
    """A model repository holding the pretrained default models (version 1)."""
    from models.prepare import ensure_models

    root = tmp_path_factory.mktemp("serving") / "repository"
    ensure_models(list(DEFAULT_MODELS), root, cache_dir=weights_cache, mirror=str(mirror))
    return root


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[ServerProcess]:
    """One real server for the read-mostly integration tests."""
    with running_server(repository, models=",".join(DEFAULT_MODELS)) as process:
        yield process


@pytest.fixture(scope="session")
def cifar10_test_set() -> LabelledImages:
    """The 10,000 test JPEGs, preprocessed as the service does (about 120 MB)."""
    if not CIFAR_TEST_JPEG.is_dir():
        pytest.skip(f"no CIFAR-10 JPEG test set at {CIFAR_TEST_JPEG}")
    labels = read_labels(LABELS_DIR / "cifar10.txt")
    data = load_folder(CIFAR_TEST_JPEG, CIFAR_PREPROCESSING, labels)
    assert len(data.inputs) == 10_000
    assert np.bincount(data.labels).tolist() == [1000] * 10
    return data


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `RESNET_SERVE_*` variable of the shell running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("RESNET_SERVE_"):
            monkeypatch.delenv(key)
