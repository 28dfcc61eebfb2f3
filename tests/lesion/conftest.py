"""Lesion fixtures: ResNet-20 as the service loads it, a few images per class, one study."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.lesion.dataset import LabelledImages, load_folder
from service.lesion.evaluation import load_runtime
from service.lesion.results import LesionStudy
from service.lesion.study import StudyConfig, run_study
from service.runtime.model import ModelRuntime
from tests.helpers import CIFAR_TEST_JPEG

MODEL = "resnet20-cifar10"
IMAGES_PER_CLASS = 5


@pytest.fixture(scope="session")
def runtime(repository: Path) -> Iterator[ModelRuntime]:
    loaded = load_runtime(repository, MODEL)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def images(runtime: ModelRuntime) -> LabelledImages:
    if not CIFAR_TEST_JPEG.is_dir():
        pytest.skip(f"no CIFAR-10 JPEG test set at {CIFAR_TEST_JPEG}")
    return load_folder(
        CIFAR_TEST_JPEG, runtime.preprocessing, runtime.labels, limit=IMAGES_PER_CLASS
    )


@pytest.fixture(scope="session")
def study(runtime: ModelRuntime, images: LabelledImages) -> LesionStudy:
    """The default study, with reordering, on 5 images per class."""
    return run_study(runtime, images, StudyConfig(reorder=True))
