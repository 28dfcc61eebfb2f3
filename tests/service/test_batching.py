"""Dynamic batching seen from outside: concurrent clients share batches, and the
answer for an image does not depend on the batch it ran in.

The batch sizes come from the server's own `resnet_serve_batch_size` histogram,
read before and after each test, so that earlier requests do not count.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CIFAR_TEST_JPEG, ServerProcess, running_server

CLIENTS = 32
MODEL = "resnet20-cifar10"
QUEUE_DELAY_MS = 20
# Here a burst lands in one or two batches even on a loaded 2-core machine: the
# oldest image waits up to 250 ms for the others.
PATIENT = "resnet56-cifar10"
PATIENT_DELAY_MS = 250
SPLIT_BATCH = 4
SPLIT_IMAGES = 10
#: One JPEG of each class in turn, so that neighbours in a batch differ.
IMAGES = [
    (CIFAR_TEST_JPEG / label / f"{index:04d}.jpg").read_bytes()
    for index in range(CLIENTS // 10 + 1)
    for label in sorted(path.name for path in CIFAR_TEST_JPEG.iterdir())
][:CLIENTS]


@pytest.fixture(scope="module")
def batching_server(repository: Path, tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("batching") / "models.json"
    config.write_text(json.dumps({PATIENT: {"max_queue_delay_ms": PATIENT_DELAY_MS}}))
    with running_server(repository, models=f"{MODEL},{PATIENT}", max_batch_size=CLIENTS,
                        max_queue_delay_ms=QUEUE_DELAY_MS, model_config=config) as process:
        yield process


@pytest.fixture(scope="module")
def split_server(repository: Path) -> Iterator[ServerProcess]:
    with running_server(repository, models=MODEL, max_batch_size=SPLIT_BATCH,
                        max_queue_delay_ms=QUEUE_DELAY_MS) as process:
        yield process


def batch_sizes(url: str, model: str) -> dict[str, float]:
    """The model's batch-size histogram: cumulative bucket counts by `le`, plus sum."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    histogram: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "resnet_serve_batch_size_bucket":
                histogram[sample.labels["le"]] = sample.value
            elif sample.name == "resnet_serve_batch_size_sum":
                histogram["sum"] = sample.value
    return histogram


def growth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


async def classify_all(url: str, model: str, images: list[bytes]) -> list[dict[str, Any]]:
    """One single-image request per image, all at once; the answers in image order."""
    limits = httpx.Limits(max_connections=len(images))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*[
            client.post(f"/v1/models/{model}/classify", params={"top_k": 10}, content=image,
                        headers={"Content-Type": "image/jpeg"})
            for image in images
        ])
    assert [response.status_code for response in responses] == [200] * len(images)
    return [response.json()["predictions"][0] for response in responses]


def classify_one(url: str, model: str, images: list[bytes]) -> list[dict[str, Any]]:
    """One request holding all of `images`; its predictions, in request order."""
    files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    response = httpx.post(f"{url}/v1/models/{model}/classify", files=files,
                          params={"top_k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def assert_same_prediction(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Same classes in the same order, probabilities within 1e-6."""
    assert [e["class_id"] for e in first["top"]] == [e["class_id"] for e in second["top"]]
    for a, b in zip(first["top"], second["top"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


async def test_concurrent_clients_mostly_share_batches(batching_server: ServerProcess) -> None:
    url = batching_server.url
    before = batch_sizes(url, MODEL)

    await classify_all(url, MODEL, IMAGES)

    grown = growth(before, batch_sizes(url, MODEL))
    batches, alone = grown["+Inf"], grown["1.0"]
    assert grown["sum"] == CLIENTS
    assert batches - alone > alone, f"{alone:.0f} of {batches:.0f} batches held one image"


async def test_prediction_is_the_same_alone_or_in_a_batch_of_32(
    batching_server: ServerProcess,
) -> None:
    url = batching_server.url
    target, others = IMAGES[3], IMAGES[:3] + IMAGES[4:]

    before = batch_sizes(url, PATIENT)
    (alone,) = await classify_all(url, PATIENT, [target])
    ran_alone = growth(before, batch_sizes(url, PATIENT))

    before = batch_sizes(url, PATIENT)
    together = await classify_all(url, PATIENT, [target, *others])
    ran_together = growth(before, batch_sizes(url, PATIENT))

    assert ran_alone["+Inf"] == ran_alone["1.0"] == 1
    assert ran_together["sum"] == CLIENTS
    assert ran_together["1.0"] == 0, "an image ran alone: the comparison proves nothing"
    assert_same_prediction(alone, together[0])


def test_request_over_max_batch_size_is_split_and_answered_in_order(
    split_server: ServerProcess,
) -> None:
    url = split_server.url
    images = IMAGES[:SPLIT_IMAGES]
    singles = [classify_one(url, MODEL, [image])[0] for image in images]

    before = batch_sizes(url, MODEL)
    combined = classify_one(url, MODEL, images)
    ran = growth(before, batch_sizes(url, MODEL))

    assert ran["sum"] == SPLIT_IMAGES
    assert ran["+Inf"] == ran[f"{SPLIT_BATCH}.0"] == math.ceil(SPLIT_IMAGES / SPLIT_BATCH)
    assert len(combined) == SPLIT_IMAGES
    for single, answer in zip(singles, combined, strict=True):
        assert_same_prediction(single, answer)
    # Equal in order means in request order only if the answers tell images apart.
    assert len({single["top"][0]["class_id"] for single in singles}) > 1
