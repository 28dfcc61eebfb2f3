"""Model listing and metadata, health, the Prometheus series and request ids in
the log, against real servers exporting the pretrained models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.weights import sha256_of
from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import wait_for

CPU = "CPUExecutionProvider"
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck"]
#: Model, architecture, residual blocks (3 stages of (depth - 2) / 6).
MODELS = [("resnet20-cifar10", "resnet20", 9), ("resnet56-cifar10", "resnet56", 27)]
DEFAULT_BATCHING = {"max_batch_size": 32, "max_queue_delay_ms": 2.0, "max_queue_size": 1024}
BLOCK_FIELDS = {"index", "name", "stage", "downsample", "params", "macs"}
#: Every series of the README's metrics section, as exposed (`resnet_serve_` left off).
METRICS = [
    ("requests_total", "counter"),
    ("request_duration_seconds", "histogram"),
    ("queue_wait_seconds", "histogram"),
    ("inference_duration_seconds", "histogram"),
    ("batch_size", "histogram"),
    ("queue_depth", "gauge"),
    ("images_total", "counter"),
    ("model_load_seconds", "gauge"),
    ("model_info", "gauge"),
    ("batch_failures_total", "counter"),
    ("dropped_requests_total", "counter"),
    ("subnetwork_graphs", "gauge"),
]
UNKNOWN = "resnet57-cifar10"
IMAGE = CIFAR_SAMPLES[0].read_bytes()


@pytest.fixture(scope="module")
def debug_server(repository: Path) -> Iterator[ServerProcess]:
    """Logs a line per request (DEBUG), each with its request id."""
    with running_server(repository, models=MODELS[0][0], log_level="DEBUG") as process:
        yield process


@pytest.fixture(scope="module")
def exposition(server: ServerProcess) -> dict[str, Any]:
    """/metrics after a classification and two requests for an unknown model."""
    model = MODELS[0][0]
    classified = httpx.post(f"{server.url}/v1/models/{model}/classify", content=IMAGE,
                            headers={"Content-Type": "image/png"}, timeout=30)
    assert classified.status_code == 200
    assert httpx.get(f"{server.url}/v1/models/{UNKNOWN}", timeout=30).status_code == 404
    unknown = httpx.post(f"{server.url}/v1/models/{UNKNOWN}/classify", content=IMAGE,
                         headers={"Content-Type": "image/png"}, timeout=30)
    assert unknown.status_code == 404

    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    return {"text": response.text, "families": families}


def _samples(exposition: dict[str, Any], name: str, **labels: str) -> list[Any]:
    return [
        sample for family in exposition["families"].values() for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def _metadata(server: ServerProcess, model: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/models/{model}", timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- /v1/models ---------------------------------------------------------------------

def test_list_names_every_model_with_its_facts_and_readiness(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert response.status_code == 200
    listed = {entry["name"]: entry for entry in response.json()["models"]}

    assert sorted(listed) == [name for name, _, _ in MODELS]
    for name, architecture, blocks in MODELS:
        assert listed[name] == {
            "name": name, "version": "1", "dataset": "cifar10", "architecture": architecture,
            "num_blocks": blocks, "pretrained": True, "provider": CPU, "ready": True,
        }


@pytest.mark.parametrize("name,architecture,count", MODELS)
def test_metadata_lists_the_residual_blocks(server: ServerProcess, name: str,
                                            architecture: str, count: int) -> None:
    meta = _metadata(server, name)
    blocks = meta["blocks"]

    assert meta["name"] == name and meta["version"] == "1" and meta["ready"] is True
    assert meta["architecture"]["name"] == architecture
    assert [block["index"] for block in blocks] == list(range(count))
    assert all(set(block) >= BLOCK_FIELDS for block in blocks)
    assert all("onnx" not in block for block in blocks), "graph internals leaked"
    per_stage = count // 3
    assert [block["name"] for block in blocks] == [
        f"layer{stage}.{i}" for stage in (1, 2, 3) for i in range(per_stage)
    ]
    assert [block["stage"] for block in blocks] == [s for s in (1, 2, 3) for _ in range(per_stage)]
    # Stages 2 and 3 halve the resolution in their first block.
    assert [b["name"] for b in blocks if b["downsample"]] == ["layer2.0", "layer3.0"]
    assert all(block["params"] > 0 and block["macs"] > 0 for block in blocks)
    assert sum(block["params"] for block in blocks) < meta["total_params"]
    assert sum(block["macs"] for block in blocks) < meta["total_macs"]


@pytest.mark.parametrize("name", [name for name, _, _ in MODELS])
def test_metadata_holds_labels_preprocessing_and_source(server: ServerProcess, mirror: Path,
                                                        name: str) -> None:
    meta = _metadata(server, name)
    source = meta["source"]

    assert meta["dataset"] == "cifar10"
    assert meta["labels"] == CIFAR10_LABELS
    assert meta["preprocessing"] == {
        "resize": 32, "crop": None, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
    }
    assert source["kind"] == "published"
    assert source["sha256"] == sha256_of(mirror / "cifar10" / source["file"])
    assert source["url"].endswith("/" + source["file"])


@pytest.mark.parametrize("name", [name for name, _, _ in MODELS])
def test_metadata_reports_the_provider_that_runs_it_and_the_batching(
    server: ServerProcess, name: str
) -> None:
    runtime = _metadata(server, name)["runtime"]

    assert runtime["provider"] == CPU
    assert runtime["providers_requested"] == [CPU]
    assert runtime["batching"] == DEFAULT_BATCHING
    assert runtime["intra_op_threads"] >= 1
    assert runtime["load_seconds"] >= 0


# --- health ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,status", [("/health/live", "live"), ("/health/ready", "ready")])
def test_health_probes_answer_200(server: ServerProcess, path: str, status: str) -> None:
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": status}


# --- /metrics ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", METRICS)
def test_every_documented_metric_is_exposed(exposition: dict[str, Any], name: str,
                                            kind: str) -> None:
    family = exposition["families"].get("resnet_serve_" + name.removesuffix("_total"))
    assert family is not None, f"resnet_serve_{name} is not exposed"
    assert family.type == kind


def test_requests_are_counted_by_model_route_template_and_code(
    exposition: dict[str, Any],
) -> None:
    (served,) = _samples(exposition, "resnet_serve_requests_total", model=MODELS[0][0],
                         endpoint="/v1/models/{model}/classify", code="200")
    assert served.value >= 1
    assert set(served.labels) == {"model", "endpoint", "code", "network"}
    assert served.labels["network"] == "full"


@pytest.mark.parametrize("endpoint", ["/v1/models/{model}", "/v1/models/{model}/classify"])
def test_unknown_model_is_counted_under_a_fixed_label(exposition: dict[str, Any],
                                                      endpoint: str) -> None:
    (refused,) = _samples(exposition, "resnet_serve_requests_total", model="_unknown",
                          endpoint=endpoint, code="404")
    assert refused.value >= 1
    assert UNKNOWN not in exposition["text"], "a client's model name became a label value"


@pytest.mark.parametrize("name", [name for name, _, _ in MODELS])
def test_model_series_carry_the_model_facts(exposition: dict[str, Any], name: str) -> None:
    (info,) = _samples(exposition, "resnet_serve_model_info", model=name)
    assert info.labels == {"model": name, "version": "1", "provider": CPU}
    assert info.value == 1
    (load,) = _samples(exposition, "resnet_serve_model_load_seconds", model=name, version="1")
    assert load.value > 0
    (depth,) = _samples(exposition, "resnet_serve_queue_depth", model=name)
    assert depth.value == 0


@pytest.mark.parametrize("name", [
    "resnet_serve_queue_wait_seconds_count",
    "resnet_serve_inference_duration_seconds_count",
    "resnet_serve_batch_size_count",
    "resnet_serve_images_total",
])
def test_a_classification_shows_in_the_batch_series(exposition: dict[str, Any],
                                                    name: str) -> None:
    assert sum(s.value for s in _samples(exposition, name, model=MODELS[0][0])) >= 1


# --- request ids ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,status", [
    (f"/v1/models/{MODELS[0][0]}/classify", 200),
    (f"/v1/models/{UNKNOWN}/classify", 404),
])
def test_request_id_is_in_the_log_line_of_its_request(debug_server: ServerProcess, path: str,
                                                      status: int) -> None:
    request_id = f"trace-{uuid.uuid4().hex}"
    response = httpx.post(debug_server.url + path, content=IMAGE, timeout=30,
                          headers={"Content-Type": "image/png", "X-Request-ID": request_id})
    assert response.status_code == status
    assert response.headers["x-request-id"] == request_id

    def logged() -> list[str]:
        return [line for line in debug_server.log().splitlines() if request_id in line]

    wait_for(lambda: bool(logged()), 5, "the request's log line")
    (line,) = logged()
    assert f"[{request_id}]" in line and f"POST {path} -> {status}" in line
