"""Build the CPU image from the unchanged docker/Dockerfile.cpu, run it, use it.

Opt-in, because it installs an engine and builds an image (from a machine
without an engine: set-up about 3 min, a cold build about 4 min on two cores,
these checks about 1 min): set RESNET_SERVE_CONTAINER_TESTS=1, as `.ci/run`
does. With podman absent and root available, scripts/container_engine_setup.sh
installs it first (see ../shared/CONTAINERS.md). Everything runs on 127.0.0.1 with
host networking; the containers and images made here are removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import CIFAR_SAMPLES, CIFAR_TEST_JPEG, ROOT, ServerProcess, free_port

OPT_IN = "RESNET_SERVE_CONTAINER_TESTS"
pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"container build and run tests are opt-in: set {OPT_IN}=1",
    ),
]
SETUP = ROOT / "scripts" / "container_engine_setup.sh"
BUILD = ROOT / "scripts" / "container_build.py"
RUN_ID = uuid.uuid4().hex[:8]
MODELS = ("resnet20-cifar10", "resnet56-cifar10")
# The export stage alone (CPU PyTorch) weighs over 1 GB; the runtime must not.
MAX_IMAGE_BYTES = 700 * 1024 * 1024


def _engine() -> str:
    chosen = os.environ.get("CONTAINER_ENGINE")
    if chosen:
        return chosen
    if shutil.which("podman") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(SETUP)], check=True)
    if shutil.which("podman") is not None:
        if os.geteuid() == 0:
            # Idempotent: makes sure the python:3.11-slim stand-in exists.
            subprocess.run(["bash", str(SETUP)], check=True)
        return "podman"
    if shutil.which("docker") is not None:
        return "docker"
    pytest.skip("neither podman nor docker is installed")


def _engine_run(
    engine: str, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _build(engine: str, flavour: str, tag: str, mirror: Path, *extra: str) -> None:
    env = {**os.environ, "CONTAINER_ENGINE": engine, "RESNET_SERVE_WEIGHTS_MIRROR": str(mirror)}
    result = subprocess.run(
        [sys.executable, str(BUILD), flavour, "--tag", tag, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def engine() -> str:
    return _engine()


@pytest.fixture(scope="module")
def image(engine: str, mirror: Path) -> Iterator[str]:
    tag = f"localhost/resnet-serve:test-{RUN_ID}"
    try:
        _build(engine, "cpu", tag, mirror)
        yield tag
    finally:
        _engine_run(engine, "rmi", "-f", tag)
        # The build's intermediate layers: untagged, so only this build's.
        _engine_run(engine, "image", "prune", "-f")


class Container:
    """One detached container of the image, serving on a loopback port."""

    def __init__(self, engine: str, image: str) -> None:
        self.engine = engine
        self.name = f"resnet-serve-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        self.url = f"http://127.0.0.1:{free_port()}"
        started = _engine_run(
            engine,
            "run",
            "-d",
            "--name",
            self.name,
            "--network",
            "host",
            "-e",
            "RESNET_SERVE_HOST=127.0.0.1",
            "-e",
            f"RESNET_SERVE_PORT={self.url.rsplit(':', 1)[1]}",
            image,
        )
        assert started.returncode == 0, started.stderr

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError(f"container not ready:\n{self.logs()}")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _engine_run(self.engine, *args)

    def logs(self) -> str:
        result = self.run("logs", self.name)
        return result.stdout + result.stderr

    def remove(self) -> None:
        self.run("rm", "-f", "-t", "0", self.name)


@pytest.fixture(scope="module")
def container(engine: str, image: str) -> Iterator[Container]:
    running = Container(engine, image)
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def _inspect(engine: str, image: str) -> dict[str, Any]:
    result = _engine_run(engine, "image", "inspect", image)
    assert result.returncode == 0, result.stderr
    (details,) = json.loads(result.stdout)
    return dict(details)


def test_image_keeps_its_healthcheck_and_runs_as_non_root(engine: str, image: str) -> None:
    details = _inspect(engine, image)
    config = details["Config"]
    # docker keeps the health check in Config; podman beside it.
    healthcheck = config.get("Healthcheck") or details["Healthcheck"]

    assert config["User"] == "10001"
    assert "healthcheck.py" in " ".join(healthcheck["Test"])
    assert config["Entrypoint"] == ["resnet-serve"]


def test_image_size_stays_small_without_pytorch(engine: str, image: str) -> None:
    size = int(_inspect(engine, image)["Size"])

    print(f"resnet-serve CPU image: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES


def test_runtime_has_no_pytorch_no_compiler_and_the_licences(container: Container) -> None:
    torch = container.run("exec", container.name, "python", "-c", "import torch")
    compiler = container.run("exec", container.name, "sh", "-c", "command -v gcc cc c++")
    notices = container.run("exec", container.name, "ls", "/usr/share/doc/resnet-serve/weights")
    user = container.run("exec", container.name, "id", "-u")

    assert "No module named 'torch'" in torch.stderr
    assert compiler.returncode != 0 and compiler.stdout == ""
    assert "cifar10-resnets-BSD-2-Clause.txt" in notices.stdout
    assert user.stdout.strip() == "10001"


def test_health_check_reports_healthy(container: Container) -> None:
    if container.engine.endswith("podman"):
        result = container.run("healthcheck", "run", container.name)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline and status != "healthy":
        status = container.run(
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            container.name,
        ).stdout.strip()
        time.sleep(1)
    assert status == "healthy"


def _images() -> list[Path]:
    jpegs = [
        path
        for folder in sorted(CIFAR_TEST_JPEG.iterdir())
        for path in sorted(folder.glob("*.jpg"))[:2]
    ]
    return CIFAR_SAMPLES + jpegs


def _classify(url: str, model: str, images: list[Path]) -> list[Any]:
    files = [
        (
            "file",
            (path.name, path.read_bytes(), "image/jpeg" if path.suffix == ".jpg" else "image/png"),
        )
        for path in images
    ]
    answer = httpx.post(f"{url}/v1/models/{model}/classify?top_k=5", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])


@pytest.mark.parametrize("model", MODELS)
def test_container_classifies_like_the_service_outside(
    container: Container,
    server: ServerProcess,
    model: str,
) -> None:
    images = _images()
    inside = _classify(container.url, model, images)
    outside = _classify(server.url, model, images)

    assert len(inside) == len(images) == 40
    for got, want in zip(inside, outside, strict=True):
        assert [top["class_id"] for top in got["top"]] == [top["class_id"] for top in want["top"]]
        for got_top, want_top in zip(got["top"], want["top"], strict=True):
            assert got_top["probability"] == pytest.approx(want_top["probability"], abs=1e-5)


def test_container_exports_metrics(container: Container) -> None:
    _classify(container.url, MODELS[0], CIFAR_SAMPLES[:2])
    text = httpx.get(f"{container.url}/metrics", timeout=10).text

    assert 'resnet_serve_images_total{model="resnet20-cifar10"' in text
    assert 'resnet_serve_model_info{model="resnet56-cifar10"' in text


def test_sigterm_drains_and_exits_zero(engine: str, image: str) -> None:
    stopping = Container(engine, image)
    try:
        stopping.wait_ready()
        stopping.run("kill", "--signal", "TERM", stopping.name)
        waited = stopping.run("wait", stopping.name)

        assert waited.stdout.strip() == "0", stopping.logs()
        assert "draining" in stopping.logs()
    finally:
        stopping.remove()


def test_gpu_dockerfile_builds_every_stage_without_the_cuda_base(
    engine: str,
    image: str,
    mirror: Path,
) -> None:
    # The export stage is the CPU image's, so this build reuses its layers.
    tag = f"localhost/resnet-serve:test-gpu-export-{RUN_ID}"
    try:
        _build(engine, "gpu", tag, mirror, "--target", "export")
        listing = _engine_run(engine, "run", "--rm", "--entrypoint", "ls", tag, "/models")
        assert set(MODELS) <= set(listing.stdout.split())
    finally:
        _engine_run(engine, "rmi", "-f", tag)
