"""CUDA asked for where it cannot run: the server starts anyway, serves on the CPU,
says why in its log (once per provider, however many sessions are created) and
reports the provider that really runs the model."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.runtime import session
from tests.helpers import CIFAR_SAMPLES, ServerProcess, cuda_unavailable_reason, running_server
from tests.service.probes import metric

MODEL = "resnet20-cifar10"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MISSING = "NoSuchExecutionProvider"
CAT = CIFAR_SAMPLES[0]


@pytest.fixture(scope="module")
def fallback_server(repository: Path) -> Iterator[ServerProcess]:
    if cuda_unavailable_reason() is None:
        pytest.skip("CUDA runs here: there is nothing to fall back from (see test_gpu.py)")
    with running_server(repository, models=MODEL, providers=f"{CUDA},{CPU}") as process:
        yield process


def test_server_falls_back_to_the_cpu_and_serves(fallback_server: ServerProcess) -> None:
    response = httpx.post(f"{fallback_server.url}/v1/models/{MODEL}/classify",
                          content=CAT.read_bytes(), headers={"Content-Type": "image/png"},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top"][0]["label"] == "cat"
    assert httpx.get(f"{fallback_server.url}/health/ready", timeout=10).status_code == 200


def test_metadata_and_model_info_report_the_cpu(fallback_server: ServerProcess) -> None:
    url = fallback_server.url
    runtime = httpx.get(f"{url}/v1/models/{MODEL}", timeout=30).json()["runtime"]
    (listed,) = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]

    assert runtime["provider"] == listed["provider"] == CPU
    assert runtime["providers_requested"] == [CUDA, CPU]
    assert metric(url, "resnet_serve_model_info", model=MODEL, provider=CPU) == 1
    assert metric(url, "resnet_serve_model_info", model=MODEL, provider=CUDA) == 0


def test_log_says_why_cuda_is_not_used(fallback_server: ServerProcess) -> None:
    log = fallback_server.log()
    warnings = [line for line in log.splitlines() if " WARNING " in line and CUDA in line]

    assert warnings, f"no warning names {CUDA}:\n{log}"
    # Not in this build, failed to create a session, or dropped by ONNX Runtime.
    assert all(re.search(r"falling back|running on " + CPU, line) for line in warnings)
    assert re.search(rf"INFO \S+ \[-\] loaded {MODEL}:1 on {CPU}\b", log), log
    assert "Traceback" not in log


def test_missing_provider_is_warned_about_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every pruned sub-network graph gets a session: one warning, not one each.
    monkeypatch.setattr(session, "_warned_missing", set())
    caplog.set_level(logging.DEBUG, logger=session.__name__)
    for _ in range(3):
        assert session.usable_providers([MISSING, CPU]) == [CPU]
    session.usable_providers(["OtherMissingExecutionProvider", CPU])

    named = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert [level for level, message in named if MISSING in message] == [
        logging.WARNING, logging.DEBUG, logging.DEBUG,
    ]
    assert [level for level, message in named if "OtherMissing" in message] == [
        logging.WARNING
    ]
