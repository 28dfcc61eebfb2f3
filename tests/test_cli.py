"""`resnet-serve` refusing bad input with one line and exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.build import build_network
from models.repository import list_versions
from service.cli import main

LABELS = [f"class{i}" for i in range(10)]

# Settings read the environment: the shell running the tests must not leak in.
pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A valid, randomly initialised ResNet-20 checkpoint."""
    path = tmp_path / "resnet20.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": build_network("cifar", 20).state_dict()}, path)
    return path


def _export(checkpoint: Path, labels: Path, repository: Path, name: str, depth: int) -> int:
    return main([
        "export", "--checkpoint", str(checkpoint), "--name", name, "--depth", str(depth),
        "--labels", str(labels), "--repository", str(repository),
    ])


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    return err


# Nested, so that an escape from the repository still lands inside tmp_path.
@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ".hidden", "ABSOLUTE"])
def test_export_refuses_names_that_leave_the_repository(
    name: str, checkpoint: Path, labels: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "a" / "b" / "repository"
    if name == "ABSOLUTE":
        name = str(tmp_path / "absolute")
    before = sorted(tmp_path.rglob("*"))

    assert _export(checkpoint, labels, repository, name, 20) == 2
    assert f"model name {name!r} is not valid" in _one_line_error(capsys)
    assert sorted(tmp_path.rglob("*")) == before


def test_export_takes_a_valid_name(
    checkpoint: Path, labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repository"
    assert _export(checkpoint, labels, repository, "my.resnet_20-v1", 20) == 0
    assert list_versions(repository, "my.resnet_20-v1") == [1]
    assert capsys.readouterr().out.startswith("my.resnet_20-v1: ")


def test_export_refuses_a_depth_that_is_not_6n_plus_2(
    checkpoint: Path, labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(checkpoint, labels, tmp_path / "repository", "mine", 33) == 2
    error = _one_line_error(capsys)
    assert "6n+2" in error and "got 33" in error


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04" + bytes(60)],
                         ids=["empty", "text", "broken zip"])
def test_export_names_a_corrupt_checkpoint(
    content: bytes, labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(content)
    assert _export(corrupt, labels, tmp_path / "repository", "mine", 20) == 2
    assert f"{corrupt} is not a readable PyTorch checkpoint: " in _one_line_error(capsys)


def test_export_names_a_checkpoint_of_another_depth(
    checkpoint: Path, labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(checkpoint, labels, tmp_path / "repository", "mine", 32) == 2
    error = _one_line_error(capsys)
    assert f"{checkpoint} does not fit a CifarResNet" in error and "Missing key(s)" in error


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("RESNET_SERVE_MAX_QUEUE_SIZE", "0", "greater than or equal to 1"),
        ("RESNET_SERVE_PORT", "abc", "valid integer"),
    ],
)
def test_serve_names_a_bad_variable(
    variable: str, value: str, expected: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--no-prepare"]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("resnet-serve serve: invalid configuration:\n")
    (line,) = [line for line in err.splitlines() if variable in line]
    assert f"{variable}={value!r}: " in line and expected in line
