"""The whole CIFAR-10 test set through HTTP: every answer equals the offline
ONNX Runtime evaluation, and the top-1 error is the figure measured on this set.

The expected error is the one measured with plain PyTorch on these JPEGs
(`../shared/README.md`, and `tests/models/test_accuracy.py` offline); the
published figures are for the lossless originals.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.lesion.dataset import LabelledImages
from service.lesion.evaluation import load_runtime, predict, top1_error
from tests.helpers import ServerProcess

MODEL = "resnet56-cifar10"
MEASURED_ERROR = 0.168
TOLERANCE = 0.0015  # 0.15 percentage points
IMAGES_PER_REQUEST = 50
CONCURRENT_REQUESTS = 4


async def classify_all(url: str, paths: list[Path]) -> np.ndarray:
    """Top-1 class of every image, sent in multipart requests of several images."""
    chunks = [paths[i : i + IMAGES_PER_REQUEST] for i in range(0, len(paths), IMAGES_PER_REQUEST)]
    slots = asyncio.Semaphore(CONCURRENT_REQUESTS)
    limits = httpx.Limits(max_connections=CONCURRENT_REQUESTS)

    async def classify(client: httpx.AsyncClient, chunk: list[Path]) -> list[int]:
        files = [("file", (path.name, path.read_bytes(), "image/jpeg")) for path in chunk]
        async with slots:
            response = await client.post(f"/v1/models/{MODEL}/classify", files=files,
                                         params={"top_k": 1})
        assert response.status_code == 200, response.text
        return [entry["top"][0]["class_id"] for entry in response.json()["predictions"]]

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        answers = await asyncio.gather(*[classify(client, chunk) for chunk in chunks])
    return np.asarray([class_id for answer in answers for class_id in answer])


@pytest.mark.slow
async def test_served_predictions_equal_offline_ones_on_the_whole_test_set(
    server: ServerProcess, repository: Path, cifar10_test_set: LabelledImages
) -> None:
    offline = predict(load_runtime(repository, MODEL), cifar10_test_set.inputs)

    served = await classify_all(server.url, cifar10_test_set.paths)

    assert len(served) == len(offline) == 10_000
    differ = np.flatnonzero(served != offline)
    assert differ.size == 0, (
        f"{differ.size} served predictions differ from offline ones, first at "
        f"{[str(cifar10_test_set.paths[i]) for i in differ[:5]]}"
    )
    error = top1_error(served, cifar10_test_set.labels)
    assert abs(error - MEASURED_ERROR) <= TOLERANCE, f"top-1 error {error:.2%}"
