"""`resnet-serve lesion` as a user runs it: a subprocess on a tiny sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CIFAR_SAMPLES, CIFAR_TEST_JPEG, ROOT
from tests.lesion.conftest import MODEL


def _lesion(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service.cli", "lesion", *map(str, args)]
    return subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def data() -> Path:
    if not CIFAR_TEST_JPEG.is_dir():
        pytest.skip(f"no CIFAR-10 JPEG test set at {CIFAR_TEST_JPEG}")
    return CIFAR_TEST_JPEG


def test_lesion_command_writes_the_report(repository: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _lesion(
        "--repository",
        repository,
        "--model",
        MODEL,
        "--data",
        data,
        "--limit",
        "2",
        "--grid",
        "1,9",
        "--draws",
        "2",
        "--seed",
        "7",
        "--reorder",
        "--swaps",
        "1",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr

    written = json.loads((out / "lesion.json").read_text(encoding="utf-8"))
    assert (written["images"], written["limit"], written["seed"]) == (20, 2, 7)
    assert written["grid"] == [1, 9] and written["draws"] == 2
    assert len(written["blocks"]) == 9
    assert [point["swaps"] for point in written["reordering"]] == [1]
    assert (out / "lesion.md").stat().st_size > 0 and (out / "lesion.png").stat().st_size > 0
    assert "baseline top-1 error" in result.stdout
    assert "evaluating" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "0,10"], "grid values must lie in 1..9"),
        (["--draws", "0"], "must be at least 1"),
        (["--grid", "a,b"], "comma-separated integers"),
    ],
    ids=["grid-outside-blocks", "no-draws", "grid-not-numbers"],
)
def test_bad_settings_are_refused_before_any_work(
    repository: Path, data: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = _lesion(
        "--repository", repository, "--model", MODEL, "--data", data, "--out", out, *args
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "decoding" not in result.stderr and not out.exists()


def test_unknown_model_is_a_short_error(repository: Path, data: Path, tmp_path: Path) -> None:
    result = _lesion(
        "--repository",
        repository,
        "--model",
        "resnet21-cifar10",
        "--data",
        data,
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 2
    assert "resnet21-cifar10" in result.stderr and "Traceback" not in result.stderr


def test_building_the_parser_imports_neither_matplotlib_nor_torch() -> None:
    check = (
        "import sys, service.cli; service.cli.build_parser(); "
        "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_folders_that_are_not_the_models_classes_are_refused(
    repository: Path, tmp_path: Path
) -> None:
    # Two subfolders, neither a CIFAR-10 label: no error figure could mean anything.
    for name in ("cats", "dogs"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "0.png").write_bytes(CIFAR_SAMPLES[0].read_bytes())
    out = tmp_path / "out"
    result = _lesion("--repository", repository, "--model", MODEL,
                     "--data", tmp_path / "data", "--out", out)
    assert result.returncode == 2, result.stderr
    assert "neither among the model's labels" in result.stderr
    assert not out.exists()
