"""The fetch step for real: a loopback HTTP server that serves the mirror."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.manifest import get_spec
from models.weights import WeightsError, fetch_weights, sha256_of, source_address

SPEC = get_spec("resnet20-cifar10")
FILE = SPEC.weights.file_name  # type: ignore[union-attr]


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves `<root>/<dataset>/<file>`, or misbehaves as `mode` says."""

    root: Path
    mode = "good"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if self.mode == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.mode == "drop":
            # Promise the whole file, send a third, hang up.
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[tuple[str, type[_MirrorHandler]]]:
    handler = type("Handler", (_MirrorHandler,), {"root": mirror, "mode": "good"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_mirror_address_layout() -> None:
    assert source_address(SPEC, "http://host/w/") == f"http://host/w/cifar10/{FILE}"
    assert source_address(SPEC, "") == SPEC.weights.url  # type: ignore[union-attr]


def test_download_over_http_verifies_and_caches(
    http_mirror: tuple[str, type[_MirrorHandler]], tmp_path: Path
) -> None:
    address, _ = http_mirror
    seen: list[tuple[int, int | None]] = []
    path = fetch_weights(SPEC, tmp_path, address, lambda got, total: seen.append((got, total)))
    assert path == tmp_path / "cifar10" / FILE
    assert sha256_of(path) == SPEC.weights.sha256  # type: ignore[union-attr]
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert [p.name for p in (tmp_path / "cifar10").iterdir()] == [FILE]

    # A second fetch is served from the cache: nothing is transferred.
    seen.clear()
    assert fetch_weights(SPEC, tmp_path, address, lambda *a: seen.append(a)) == path
    assert seen == []


@pytest.mark.parametrize("mode,message", [("corrupt", "sha256 mismatch"),
                                          ("drop", "cut short|interrupted|failed")])
def test_bad_transfers_are_refused_and_not_kept(
    http_mirror: tuple[str, type[_MirrorHandler]], tmp_path: Path, mode: str, message: str
) -> None:
    address, handler = http_mirror
    handler.mode = mode
    with pytest.raises(WeightsError, match=message):
        fetch_weights(SPEC, tmp_path, address)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_missing_file_and_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        fetch_weights(SPEC, tmp_path, str(tmp_path / "empty-mirror"))
    with pytest.raises(WeightsError, match="failed"):
        fetch_weights(SPEC, tmp_path, "http://127.0.0.1:9")


def test_corrupted_cache_entry_is_replaced(mirror: Path, tmp_path: Path) -> None:
    target = tmp_path / "cifar10" / FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    assert sha256_of(fetch_weights(SPEC, tmp_path, str(mirror))) == SPEC.weights.sha256  # type: ignore[union-attr]


def test_unpublished_weights_need_random_init(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="random"):
        fetch_weights(get_spec("preact-resnet20-cifar10"), tmp_path)
