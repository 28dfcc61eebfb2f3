"""POST /v1/models/{model}/preprocess over real HTTP: the model's input as PNG, and its errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.manifest import Preprocessing
from models.preprocessing import decode_and_preprocess, normalise
from tests.helpers import CIFAR_SAMPLES, SAMPLES, ServerProcess

MODEL = "resnet20-cifar10"
CAT = CIFAR_SAMPLES[0]
PHOTO = SAMPLES / "imagenet" / "imagenet_06_609.jpg"


def _preprocess(
    server: ServerProcess, data: bytes, model: str = MODEL, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{model}/preprocess",
        files={"file": ("image", data)},
        headers=headers,
        timeout=30,
    )


def _spec(server: ServerProcess, model: str) -> Preprocessing:
    meta = httpx.get(f"{server.url}/v1/models/{model}", timeout=30).json()
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in meta["preprocessing"].items()
    }
    return Preprocessing(**fields)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels and holds none."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + end


@pytest.mark.parametrize("model", ["resnet20-cifar10", "resnet56-cifar10"])
@pytest.mark.parametrize("path", [CAT, PHOTO], ids=["cifar-png", "photo-jpeg"])
def test_png_is_exactly_what_the_model_is_fed(
    server: ServerProcess, model: str, path: Path
) -> None:
    data = path.read_bytes()
    response = _preprocess(server, data, model)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"

    view = Image.open(io.BytesIO(response.content))
    assert view.format == "PNG" and view.mode == "RGB"
    spec = _spec(server, model)
    assert view.size == (spec.input_size, spec.input_size)
    # Normalising the PNG's pixels gives the very tensor the service classifies.
    np.testing.assert_array_equal(normalise(view, spec), decode_and_preprocess(data, spec))


def test_raw_image_body_is_accepted(server: ServerProcess) -> None:
    data = CAT.read_bytes()
    raw = httpx.post(
        f"{server.url}/v1/models/{MODEL}/preprocess",
        content=data,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert raw.status_code == 200
    assert raw.content == _preprocess(server, data).content


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"GIF89a but not really", 400, "image"),
        (CAT.read_bytes()[:120], 400, "image"),
        (_png_header_only(9000, 9000), 413, "more than the limit"),
    ],
    ids=["empty", "not-an-image", "truncated", "too-many-pixels"],
)
def test_bad_images_get_json_errors(
    server: ServerProcess, body: bytes, status: int, message: str
) -> None:
    response = _preprocess(server, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_request_errors(server: ServerProcess) -> None:
    data = CAT.read_bytes()
    unknown = _preprocess(server, data, model="no-such-model")
    assert unknown.status_code == 404
    assert "no-such-model" in unknown.json()["error"]

    text = httpx.post(
        f"{server.url}/v1/models/{MODEL}/preprocess",
        content=b"hello",
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert text.status_code == 415

    two = httpx.post(
        f"{server.url}/v1/models/{MODEL}/preprocess",
        files=[("file", ("a", data)), ("file", ("b", data))],
        timeout=30,
    )
    assert two.status_code == 413
    assert "limit is 1" in two.json()["error"]


def test_openapi_documents_png_and_errors(server: ServerProcess) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    operation = schema["paths"]["/v1/models/{model}/preprocess"]["post"]
    assert "image/png" in operation["responses"]["200"]["content"]
    assert {"400", "401", "404", "413", "415"} <= set(operation["responses"])
    assert "/" not in schema["paths"]


def test_api_key_guards_the_endpoint_but_not_the_page(repository: Path) -> None:
    server = ServerProcess(repository, models=MODEL, api_key="preprocess-key")
    try:
        server.wait_ready()
        data = CAT.read_bytes()
        assert _preprocess(server, data).status_code == 401
        wrong = _preprocess(server, data, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = _preprocess(server, data, headers={"Authorization": "Bearer preprocess-key"})
        assert right.status_code == 200
        for path in ("/", "/static/style.css", "/static/js/app.js"):
            assert httpx.get(f"{server.url}{path}", timeout=30).status_code == 200, path
    finally:
        server.stop()
