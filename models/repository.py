"""The on-disk model repository: `<root>/<model>/<version>/{model.onnx,metadata.json}`.

Importable without PyTorch. Names and versions that come from clients are
checked against what is on disk before any path is built from them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_REPOSITORY = Path("models/repository")
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RepositoryError(LookupError):
    """A model or version is not in the repository."""


@dataclass(frozen=True)
class ModelFiles:
    name: str
    version: int
    folder: Path

    @property
    def onnx_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def metadata_path(self) -> Path:
        return self.folder / METADATA_FILE

    def read_metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.metadata_path.read_text(encoding="utf-8"))
        return data


def is_valid_name(name: str) -> bool:
    """Model names: letters, digits, dot, dash, underscore; no path separators."""
    return bool(_NAME_PATTERN.match(name)) and ".." not in name


def require_valid_name(name: str) -> None:
    """Refuse a name that `is_valid_name` refuses, before any path is built from it.

    Raises:
        ValueError: the name could leave the repository or not be served.
    """
    if not is_valid_name(name):
        raise ValueError(
            f"model name {name!r} is not valid: it must start with a letter or digit "
            "and hold at most 128 letters, digits, '.', '-' or '_', without '..' "
            "(it names a folder of the repository and appears in URLs)"
        )


def list_versions(root: Path, name: str) -> list[int]:
    """Complete versions of `name` (both files present), ascending."""
    if not is_valid_name(name):
        return []
    folder = root / name
    if not folder.is_dir():
        return []
    versions = []
    for child in folder.iterdir():
        if child.name.isdigit() and (child / MODEL_FILE).is_file() and (
            child / METADATA_FILE
        ).is_file():
            versions.append(int(child.name))
    return sorted(versions)


def locate(root: Path, name: str, version: int | None = None) -> ModelFiles:
    """The files of `name` at `version`, or at its highest version when None."""
    versions = list_versions(root, name)
    if not versions:
        raise RepositoryError(f"model {name!r} is not in the repository at {root}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise RepositoryError(
            f"model {name!r} has no version {chosen}; available: {versions}"
        )
    return ModelFiles(name, chosen, root / name / str(chosen))
