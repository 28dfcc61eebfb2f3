"""Shared plumbing for the container, compose and cluster checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cpu")


def tool(name: str) -> str:
    """Path of a command-line tool from the test extra; skips when it is absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def run_tool(*command: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def load_manifests() -> dict[Path, list[dict[str, Any]]]:
    """Every YAML document under docker/k8s/, by file."""
    return {
        path: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
    }


def documents(kind: str) -> list[dict[str, Any]]:
    found = [doc for docs in load_manifests().values() for doc in docs if doc["kind"] == kind]
    assert found, f"no {kind} in {K8S}"
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}
