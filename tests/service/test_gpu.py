"""On an NVIDIA GPU: the CUDA provider really runs the models, and agrees with the CPU.

Skipped, with the reason, unless onnxruntime lists CUDAExecutionProvider and
`nvidia-smi -L` lists a GPU. With RESNET_SERVE_TEST_REQUIRE_GPU=1 the reason
fails the tests instead (`scripts/device_check.sh` sets it). The models come
from RESNET_SERVE_TEST_REPOSITORY when set (a machine without the weights
mirror or PyTorch: random weights do for parity), else from the session's
pretrained exports.

CUDA results are compared within a tolerance rather than exactly: ONNX Runtime's
CUDA provider lets cuDNN pick its convolution algorithms and use TF32 on Ampere
and later GPUs, which rounds differently from the CPU's float32 kernels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from models.preprocessing import decode_and_preprocess
from models.repository import locate
from service.runtime.model import ModelRuntime
from service.settings import available_cpus
from tests.helpers import CIFAR_SAMPLES, ServerProcess, cuda_unavailable_reason
from tests.service.probes import metric

pytestmark = pytest.mark.gpu

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MODELS = ["resnet20-cifar10", "resnet56-cifar10"]
PROBABILITY_ATOL = 1e-2
#: Top-1 classes must agree wherever the CPU's top two are further apart than this.
CLEAR_MARGIN = 0.05


@pytest.fixture(scope="module")
def gpu_repository(request: pytest.FixtureRequest) -> Path:
    reason = cuda_unavailable_reason()
    if reason is not None:
        if os.environ.get("RESNET_SERVE_TEST_REQUIRE_GPU") == "1":
            pytest.fail(f"a GPU is required here, but {reason}")
        pytest.skip(reason)
    given = os.environ.get("RESNET_SERVE_TEST_REPOSITORY")
    repository: Path = Path(given) if given else request.getfixturevalue("repository")
    return repository


@pytest.fixture(scope="module")
def gpu_server(gpu_repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(gpu_repository, models=",".join(MODELS), providers=f"{CUDA},{CPU}")
    try:
        process.wait_ready(timeout_s=180)  # CUDA and cuDNN set-up takes a while
        yield process
    finally:
        process.stop()


def _inputs(runtime: ModelRuntime) -> np.ndarray:
    return np.stack([
        decode_and_preprocess(path.read_bytes(), runtime.preprocessing) for path in CIFAR_SAMPLES
    ])


def _runtime(repository: Path, name: str, providers: list[str]) -> ModelRuntime:
    return ModelRuntime(locate(repository, name), providers, available_cpus(), cache_size=0)


def assert_agree(cpu: np.ndarray, gpu: np.ndarray) -> None:
    """Probabilities within the tolerance, the same top-1 wherever the CPU's is clear."""
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=PROBABILITY_ATOL)
    top_two = np.sort(cpu, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > CLEAR_MARGIN
    assert (cpu.argmax(1) == gpu.argmax(1))[clear].all()


@pytest.mark.parametrize("name", MODELS)
def test_cuda_runs_every_convolution(gpu_repository: Path, tmp_path: Path, name: str) -> None:
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    files = locate(gpu_repository, name)
    session = ort.InferenceSession(str(files.onnx_path), options, providers=[CUDA, CPU])
    assert session.get_providers()[0] == CUDA

    runtime = _runtime(gpu_repository, name, [CPU])
    inputs = _inputs(runtime)
    session.run(None, runtime.feeds(inputs, [frozenset()] * len(inputs)))

    events = json.loads(Path(session.end_profiling()).read_text())
    convolutions = [event["args"]["provider"] for event in events
                    if event.get("cat") == "Node" and "Conv" in event["args"].get("op_name", "")]
    assert convolutions, "the profile shows no convolution at all"
    assert set(convolutions) == {CUDA}


@pytest.mark.parametrize("removed", [frozenset(), frozenset({0, 4})], ids=["full", "lesioned"])
@pytest.mark.parametrize("name", MODELS)
def test_cuda_predictions_match_the_cpu(gpu_repository: Path, name: str,
                                        removed: frozenset[int]) -> None:
    cpu = _runtime(gpu_repository, name, [CPU])
    gpu = _runtime(gpu_repository, name, [CUDA, CPU])
    assert gpu.provider == CUDA
    inputs = _inputs(cpu)

    expected = cpu.run_batch(inputs, [removed] * len(inputs)).probabilities
    actual = gpu.run_batch(inputs, [removed] * len(inputs)).probabilities

    assert_agree(expected, actual)


@pytest.mark.parametrize("name", MODELS)
def test_server_on_cuda_reports_it_and_answers_like_the_cpu(
    gpu_server: ServerProcess, gpu_repository: Path, name: str
) -> None:
    url = gpu_server.url
    runtime = httpx.get(f"{url}/v1/models/{name}", timeout=30).json()["runtime"]
    assert runtime["provider"] == CUDA
    assert metric(url, "resnet_serve_model_info", model=name, provider=CUDA) == 1

    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in CIFAR_SAMPLES]
    response = httpx.post(f"{url}/v1/models/{name}/classify", files=files,
                          params={"top_k": 10}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.zeros((len(CIFAR_SAMPLES), 10))
    for row, prediction in enumerate(response.json()["predictions"]):
        for entry in prediction["top"]:
            served[row, entry["class_id"]] = entry["probability"]

    cpu = _runtime(gpu_repository, name, [CPU])
    expected = cpu.run_batch(_inputs(cpu), [frozenset()] * len(CIFAR_SAMPLES)).probabilities
    assert_agree(expected, served)
