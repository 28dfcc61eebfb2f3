"""Download published weights into a cache, with hash checks and progress.

The file lands in the cache only after its hash matched: a download goes to a
temporary name beside the final one and is renamed at the end, so an
interrupted or corrupted transfer never poses as a good file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from models.manifest import ModelSpec

#: Called with (bytes received so far, total bytes or None when unknown).
ProgressCallback = Callable[[int, int | None], None]

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60.0


class WeightsError(RuntimeError):
    """The weights could not be fetched or failed their hash check."""


def default_cache_dir() -> Path:
    """`RESNET_SERVE_CACHE_DIR`, else `$XDG_CACHE_HOME/resnet-serve` or `~/.cache`."""
    configured = os.environ.get("RESNET_SERVE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resnet-serve"


def source_address(spec: ModelSpec, mirror: str | None = None) -> str:
    """Where to read the weights: the publisher, or `<mirror>/<dataset>/<file>`."""
    if spec.weights is None:
        raise WeightsError(f"{spec.name} has no published weights")
    mirror = mirror if mirror is not None else os.environ.get("RESNET_SERVE_WEIGHTS_MIRROR")
    if not mirror:
        return spec.weights.url
    return f"{mirror.rstrip('/')}/{spec.dataset}/{spec.weights.file_name}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(
    spec: ModelSpec,
    cache_dir: Path | None = None,
    mirror: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Return the local path of `spec`'s weights, downloading them if needed.

    Raises:
        WeightsError: the model has no published weights, the transfer failed
            or was cut short, or the file's sha256 does not match the manifest.
    """
    if spec.weights is None:
        raise WeightsError(
            f"{spec.name} has no published weights; export it with random "
            "initialisation instead (--random-init)"
        )
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    target = cache_dir / spec.dataset / spec.weights.file_name
    if target.exists() and _hash_matches(sha256_of(target), spec.weights.sha256):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    address = source_address(spec, mirror)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            _copy_from(address, out, progress)
        _check_hash(temp_path, spec)
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)
    return target


def _hash_matches(actual: str, expected: str) -> bool:
    # A short `expected` is the publisher's file-name prefix (not verified here).
    return actual.startswith(expected.lower())


def _check_hash(path: Path, spec: ModelSpec) -> None:
    assert spec.weights is not None
    actual = sha256_of(path)
    if not _hash_matches(actual, spec.weights.sha256):
        raise WeightsError(
            f"sha256 mismatch for {spec.weights.file_name}: expected "
            f"{spec.weights.sha256}, got {actual}; the file was not kept"
        )


def _copy_from(address: str, out, progress: ProgressCallback | None) -> None:  # type: ignore[no-untyped-def]
    if "://" not in address or address.startswith("file://"):
        path = Path(address.removeprefix("file://"))
        if not path.is_file():
            raise WeightsError(f"weights file not found in mirror: {path}")
        total = path.stat().st_size
        with path.open("rb") as source:
            _stream(source, out, total, progress)
        return

    request = urllib.request.Request(address, headers={"User-Agent": "resnet-serve"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = _stream(response, out, total, progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"download of {address} failed: {exc}") from exc
    if total is not None and received != total:
        raise WeightsError(
            f"download of {address} was cut short: {received} of {total} bytes"
        )


def _stream(source, out, total: int | None, progress: ProgressCallback | None) -> int:  # type: ignore[no-untyped-def]
    received = 0
    while True:
        try:
            chunk = source.read(CHUNK_BYTES)
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise WeightsError(f"transfer interrupted after {received} bytes: {exc}") from exc
        if not chunk:
            return received
        out.write(chunk)
        received += len(chunk)
        if progress is not None:
            progress(received, total)


__all__ = [
    "ProgressCallback",
    "WeightsError",
    "default_cache_dir",
    "fetch_weights",
    "sha256_of",
    "source_address",
]
