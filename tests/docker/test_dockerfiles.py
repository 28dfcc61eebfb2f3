"""docker/Dockerfile and docker/Dockerfile.cpu: lint and the promises they make.

Building and running the CPU image is in test_image.py (opt-in); these checks
read the files only and run everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import DEFAULT_MODELS
from tests.docker.conftest import DOCKER, DOCKERFILES, run_tool, tool
from tests.helpers import ROOT


def _stages(dockerfile: Path) -> list[str]:
    """The file's stages as text, split at each FROM."""
    text = dockerfile.read_text()
    return re.split(r"^(?=FROM )", text, flags=re.MULTILINE)[1:]


def _instructions(stage: str, keyword: str) -> list[str]:
    joined = stage.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.startswith(keyword + " ")]


def test_dockerfiles_pass_hadolint_without_warnings() -> None:
    result = run_tool(
        tool("hadolint"),
        "--failure-threshold",
        "warning",
        *map(str, DOCKERFILES),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_runtime_stage_is_non_root_healthchecked_and_runs_the_service(
    dockerfile: Path,
) -> None:
    final = _stages(dockerfile)[-1]
    (user,) = _instructions(final, "USER")
    (healthcheck,) = _instructions(final, "HEALTHCHECK")

    assert user.split()[1] not in {"0", "root"}
    assert "healthcheck.py" in healthcheck
    assert _instructions(final, "ENTRYPOINT") == ['ENTRYPOINT ["resnet-serve"]']
    assert "RESNET_SERVE_MODEL_REPOSITORY=/models" in final


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_pytorch_stays_in_the_build_stage(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    runtime_requirements = [
        DOCKER / Path(name).name
        for stage in stages[1:]
        for name in re.findall(r"docker/(requirements[\w-]*\.txt)", stage)
    ]

    assert "requirements-export.txt" in stages[0]
    assert runtime_requirements
    for path in runtime_requirements:
        assert "torch" not in path.read_text(), path
    assert "--from=export /models /models" in stages[-1]


def test_both_images_share_one_export_stage() -> None:
    gpu, cpu = (
        [line for line in _stages(path)[0].splitlines() if line and not line.startswith("#")]
        for path in DOCKERFILES
    )

    # Identical instructions: either build reuses the other's cached export layers.
    assert gpu == cpu


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_default_models_are_those_of_make_serve(dockerfile: Path) -> None:
    defaults = set(re.findall(r"^ARG MODELS=(\S+)$", dockerfile.read_text(), re.MULTILINE))

    assert defaults == {",".join(DEFAULT_MODELS)}


def test_runtime_pins_are_exact_and_name_one_onnx_runtime() -> None:
    for name, runtime in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        lines = (DOCKER / f"requirements-{name}.txt").read_text().splitlines()
        pins = [line for line in lines if line and not line.startswith(("#", "-r"))]
        assert [pin.split("==")[0] for pin in pins] == [runtime]
    for path in DOCKER.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            if line and not line.startswith(("#", "-r")):
                assert re.fullmatch(r"[\w.\-\[\]]+==[\w.]+", line), f"{path.name}: {line}"


def test_gpu_base_matches_the_cuda_major_of_onnxruntime_gpu() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG CUDA_IMAGE=(\S+)$", text, re.MULTILINE)

    # onnxruntime-gpu 1.31.1 on PyPI: CUDA 13.0 and cuDNN 9 (see the comment there).
    assert "onnxruntime-gpu==1.31.1" in (DOCKER / "requirements-gpu.txt").read_text()
    assert re.fullmatch(r"docker\.io/nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu24\.04", base)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_weights_licences_travel_with_the_models(dockerfile: Path) -> None:
    final = _stages(dockerfile)[-1]
    notices = sorted((DOCKER / "licences").glob("*.txt"))

    assert "COPY docker/licences " in final
    assert [path.name for path in notices] == [
        "cifar10-resnets-BSD-2-Clause.txt",
        "torchvision-resnets-BSD-3-Clause.txt",
    ]
    assert "Yerlan Idelbayev" in notices[0].read_text()
    assert "Soumith Chintala" in notices[1].read_text()


def test_dockerignore_admits_only_what_the_images_copy() -> None:
    rules = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/").split("/")[0]
        for path in DOCKERFILES
        for line in path.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    }

    assert rules[rules.index("*")] == "*"
    assert copied <= admitted
    assert {"models/repository/", "**/__pycache__/"} <= set(rules)
