"""Hostile input against a real server with an API key and tight limits.

Each refusal must be a clear 4xx in the service's JSON error shape; nothing
may reach outside the model repository; the key must never show in the log.
"""

from __future__ import annotations

import io
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.api.inputs import json_depth
from service.api.v2_codec import parse_infer_request
from service.errors import InvalidInputError
from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import exchange, raw_request

KEY = "s3cret-key-for-tests-only-7f3a"
MODEL = "resnet20-cifar10"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 1024 * 1024
MAX_IMAGES = 4
MAX_PIXELS = 1_000_000
MAX_HEADER = 16 * 1024
IMAGE = CIFAR_SAMPLES[0].read_bytes()


@pytest.fixture(scope="module")
def guarded(repository: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[ServerProcess]:
    # A complete, loadable model beside the repository: the prize of a traversal.
    root = tmp_path_factory.mktemp("guarded")
    shutil.copytree(repository / MODEL, root / "repository" / MODEL)
    shutil.copytree(repository / MODEL, root / "outside" / "1")
    with running_server(
        root / "repository", models=MODEL, api_key=KEY, log_level="DEBUG",
        max_body_bytes=MAX_BODY, max_images_per_request=MAX_IMAGES,
        max_image_pixels=MAX_PIXELS, max_header_bytes=MAX_HEADER, max_json_depth=16,
    ) as process:
        yield process


def _post_image(server: ServerProcess, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{MODEL}/classify", content=data,
                      headers={"Content-Type": "image/png", **AUTH, **headers}, timeout=30)


def _assert_refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"], response.json()


# --- API key ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{MODEL}"),
    ("POST", f"/v1/models/{MODEL}/classify"),
    ("POST", f"/v1/models/{MODEL}/subnetwork/classify"),
    ("GET", "/v1/models/no-such-model"),
])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x"])
def test_api_and_metadata_need_the_key(guarded: ServerProcess, method: str, path: str,
                                       authorization: str | None) -> None:
    headers = {"Content-Type": "image/png"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.request(method, guarded.url + path, headers=headers,
                             content=IMAGE if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]


def test_right_key_is_served_and_health_stays_open(guarded: ServerProcess) -> None:
    assert _post_image(guarded, IMAGE).status_code == 200
    assert httpx.get(f"{guarded.url}/v1/models/{MODEL}", headers=AUTH).status_code == 200
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert httpx.get(guarded.url + path).status_code == 200, path


def test_key_never_reaches_the_log(guarded: ServerProcess) -> None:
    wrong = "Bearer not-the-key-but-logged-if-anything-is"
    httpx.get(f"{guarded.url}/v1/models", headers={"Authorization": wrong})
    _post_image(guarded, IMAGE)
    _post_image(guarded, b"not an image")
    log = guarded.log()
    assert "GET /v1/models" in log, "the DEBUG log recorded nothing: the check means nothing"
    assert KEY not in log
    assert "not-the-key" not in log


# --- path traversal --------------------------------------------------------------------

HOSTILE_NAMES = [
    "..", "..%2F..%2Foutside", "%2e%2e%2foutside", "..%2Foutside", "%2Fetc%2Fpasswd",
    "resnet20-cifar10%00", "resnet20-cifar10%00.json", "%00", "..%5Coutside",
    "resnet20-cifar10%2F..%2F..%2Foutside", "outside%2F1", "%252e%252e%252foutside",
    "." * 200, "a" * 5000,
]


def _routes_with_model(server: ServerProcess) -> list[tuple[str, str]]:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    return [(method.upper(), path) for path, operations in schema["paths"].items()
            for method in operations if "{model}" in path]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_model_names_in_urls_never_leave_the_repository(guarded: ServerProcess, name: str,
                                                         ) -> None:
    routes = _routes_with_model(guarded)
    assert routes, "no route takes a model name: nothing was tested"
    for method, template in routes:
        path = template.replace("{model}", name).replace("{version}", "1")
        body = IMAGE if method == "POST" else b""
        answer = exchange(guarded.port, raw_request(
            method, path, body, {"Content-Type": "image/png", **AUTH}))
        assert answer.outcome == "complete", (path, answer)
        assert answer.status in (400, 404, 422, 431), (path, answer.status, answer.body)


@pytest.mark.parametrize("version", ["..", "..%2F..%2Foutside", "1%00", "%2F1", "-1", "1e3"])
def test_versions_in_urls_never_leave_the_repository(guarded: ServerProcess, version: str,
                                                     ) -> None:
    routes = [(m, p) for m, p in _routes_with_model(guarded) if "{version}" in p]
    if not routes:
        pytest.skip("no route takes a model version in this build")
    for method, template in routes:
        path = template.replace("{model}", MODEL).replace("{version}", version)
        answer = exchange(guarded.port, raw_request(method, path, b"{}", AUTH))
        assert answer.outcome == "complete", (path, answer)
        assert answer.status in (400, 404, 422), (path, answer.status, answer.body)


def test_raw_nul_byte_in_request_line_is_refused(guarded: ServerProcess) -> None:
    answer = exchange(guarded.port, raw_request("GET", f"/v1/models/{MODEL}\x00", b"", AUTH))
    assert answer.outcome == "complete" and answer.status == 400


# --- size limits -------------------------------------------------------------------------

def test_body_over_limit_is_413_declared_or_streamed(guarded: ServerProcess) -> None:
    big = b"\0" * (MAX_BODY + 1)
    _assert_refused(_post_image(guarded, big), 413, "over the limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(32):
            yield b"\0" * (MAX_BODY // 16)

    streamed = httpx.post(f"{guarded.url}/v1/models/{MODEL}/classify", content=chunks(),
                          headers={"Content-Type": "image/png", **AUTH}, timeout=30)
    _assert_refused(streamed, 413, "over the limit")


def test_too_many_images_is_413(guarded: ServerProcess) -> None:
    files = [("file", (f"{i}.png", IMAGE, "image/png")) for i in range(MAX_IMAGES + 1)]
    response = httpx.post(f"{guarded.url}/v1/models/{MODEL}/classify", files=files,
                          headers=AUTH, timeout=30)
    _assert_refused(response, 413, f"limit is {MAX_IMAGES}")
    files = files[:MAX_IMAGES]
    response = httpx.post(f"{guarded.url}/v1/models/{MODEL}/classify", files=files,
                          headers=AUTH, timeout=30)
    assert response.status_code == 200


def _png_bomb(width: int, height: int) -> bytes:
    """A real PNG of black RGB pixels, compressed row by row (kilobytes on the wire)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def _peak_rss_reset(pid: int) -> bool:
    """Reset the kernel's peak RSS (VmHWM) of `pid`; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_decompression_bomb_is_refused_before_decoding(guarded: ServerProcess) -> None:
    width = height = 6000  # 36 M pixels, 108 MB decoded; well under 1 MB compressed
    bomb = _png_bomb(width, height)
    assert len(bomb) < MAX_BODY
    # The bomb is a valid image: were it decoded, it would be 108 MB of pixels.
    assert Image.open(io.BytesIO(bomb)).size == (width, height)

    pid = guarded.process.pid
    measured = _peak_rss_reset(pid)
    before_kb = _status_kb(pid, "VmRSS")
    response = _post_image(guarded, bomb)
    _assert_refused(response, 413, f"more than the limit of {MAX_PIXELS}")
    if measured:
        grown_mb = (_status_kb(pid, "VmHWM") - before_kb) / 1024
        assert grown_mb < 40, f"peak RSS grew {grown_mb:.0f} MB: the pixels were decoded"


@pytest.mark.parametrize("fmt", ["GIF", "JPEG", "WEBP", "TIFF"])
def test_oversized_images_are_413_in_every_format(guarded: ServerProcess, fmt: str) -> None:
    buffer = io.BytesIO()
    options = {"compression": "tiff_deflate"} if fmt == "TIFF" else {}
    Image.new("L", (1200, 1000)).save(buffer, format=fmt, **options)
    assert len(buffer.getvalue()) < MAX_BODY
    _assert_refused(_post_image(guarded, buffer.getvalue()), 413, "pixels")


def test_headers_over_limit_are_431(guarded: ServerProcess) -> None:
    small = exchange(guarded.port, raw_request("GET", "/v1/models", b"",
                                               {**AUTH, "X-Padding": "a" * 1000}))
    assert small.status == 200
    one_big = raw_request("GET", "/v1/models", b"", {**AUTH, "X-Padding": "a" * MAX_HEADER})
    many = raw_request("GET", "/v1/models", b"",
                       {**AUTH, **{f"X-Pad-{i}": "a" * 60 for i in range(MAX_HEADER // 50)}})
    for request in (one_big, many):
        answer = exchange(guarded.port, request)
        assert answer.outcome == "complete" and answer.status == 431
        assert "headers are over the limit" in answer.json()["error"]  # type: ignore[index]
    assert httpx.get(f"{guarded.url}/health/live").status_code == 200


# --- JSON --------------------------------------------------------------------------------

def test_json_depth_counts_nesting_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\"[[["}') == 1
    assert json_depth(b"17") == 0

    def parse(body: bytes, max_depth: int = 32) -> object:
        return parse_infer_request(body, None, {"input": "FP32"}, max_depth)

    shallow = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}'
    # Object, inputs list, tensor object, data list: four levels.
    assert parse(shallow, 4).inputs[0].values.tolist() == [1.0, 2.0]  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match="nests 5 levels"):
        parse(shallow.replace(b"[1, 2]", b"[[1, 2]]"), 4)
    with pytest.raises(InvalidInputError, match="nests 100 levels"):
        parse(b"[" * 100 + b"]" * 100)
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse(b'{"a": ')


def test_deep_or_huge_json_bodies_are_4xx(guarded: ServerProcess) -> None:
    routes = [p for m, p in _routes_with_model(guarded) if m == "POST" and p.endswith("/infer")]
    if not routes:
        pytest.skip("no JSON inference route (/v2) in this build")
    url = guarded.url + routes[0].replace("{model}", MODEL).replace("{version}", "1")
    headers = {"Content-Type": "application/json", **AUTH}
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = httpx.post(url, content=deep, headers=headers, timeout=30)
    assert 400 <= answer.status_code < 500, answer.text
    huge = b'{"inputs": [' + b"0.5," * (MAX_BODY // 4) + b"0.5]}"
    answer = httpx.post(url, content=huge, headers=headers, timeout=30)
    assert answer.status_code == 413, answer.text
