"""Every /v1 error over real HTTP: its status, the one JSON error shape, a message
that names the problem, the OpenAPI entry that declares it, and a server that
goes on serving afterwards.

Limits, bombs and hostile paths are in `test_security.py`; queues, deadlines
and disconnects in `test_reliability*.py`.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import CIFAR_SAMPLES, CIFAR_TEST_JPEG, SAMPLES, ServerProcess
from tests.service.probes import metric

MODEL = "resnet20-cifar10"
CLASSIFY = "/v1/models/{model}/classify"
SUBNETWORK = "/v1/models/{model}/subnetwork/classify"
METADATA = "/v1/models/{model}"
PNG = CIFAR_SAMPLES[0].read_bytes()  # the cat of the lossless samples
JPEG = (CIFAR_TEST_JPEG / "cat" / "0000.jpg").read_bytes()
PHOTO = (SAMPLES / "imagenet" / "imagenet_00_243.jpg").read_bytes()


def _zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.png", PNG)
    return buffer.getvalue()


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _damaged_png_stream() -> bytes:
    """The PNG with 16 bytes of its compressed pixel data inverted."""
    data = bytearray(PNG)
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(byte ^ 0xFF for byte in data[middle : middle + 16])
    return bytes(data)


#: Bodies that are no usable image, and the words their refusal must contain.
BAD_IMAGES = {
    "empty": (b"", "empty"),
    "png-cut-in-half": (PNG[: len(PNG) // 2], "truncated"),
    "cifar-jpeg-cut-in-half": (JPEG[: len(JPEG) // 2], "truncated"),
    "photo-jpeg-cut-in-half": (PHOTO[: len(PHOTO) // 2], "truncated"),
    "png-damaged-pixel-data": (_damaged_png_stream(), "cannot decode"),
    "png-signature-then-noise": (PNG[:8] + bytes(range(256)) * 4, "accepted format"),
    "random-bytes": (bytes(range(256)) * 4, "accepted format"),
    "text": (b"a cat, sitting on a mat\n", "accepted format"),
    "pdf-header": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n",
                   "accepted format"),
    "zip": (_zip_archive(), "accepted format"),
    # Formats Pillow could read but the service does not take: EPS would be
    # handed to Ghostscript, where one is installed.
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n",
            "accepted format"),
    "ico": (_encoded(Image.open(CIFAR_SAMPLES[0]), "ICO"), "accepted format"),
    "ppm": (_encoded(Image.open(CIFAR_SAMPLES[0]), "PPM"), "accepted format"),
}


def _url(server: ServerProcess, route: str, model: str = MODEL) -> str:
    return server.url + route.replace("{model}", model)


def _post_raw(server: ServerProcess, route: str, body: bytes, content_type: str | None,
              **params: object) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(_url(server, route), content=body, headers=headers, params=params,
                      timeout=30)


def _post_files(server: ServerProcess, route: str, images: list[bytes]) -> httpx.Response:
    files = [("file", (f"image{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(_url(server, route), files=files, timeout=30)


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """The answer is `status` with `{"error": message}`, the message holding `words`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    message = str(body["error"])
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


# --- the image itself ----------------------------------------------------------------

@pytest.mark.parametrize("route", [CLASSIFY, SUBNETWORK])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_unusable_raw_image_is_400_naming_the_problem(server: ServerProcess, route: str,
                                                      case: str) -> None:
    body, words = BAD_IMAGES[case]
    assert_error(_post_raw(server, route, body, "image/png"), 400, words)


@pytest.mark.parametrize("case", ["empty", "png-cut-in-half", "cifar-jpeg-cut-in-half", "zip"])
@pytest.mark.parametrize("position", [1, 2, 3])
def test_one_bad_image_refuses_the_whole_request_and_names_its_position(
    server: ServerProcess, position: int, case: str
) -> None:
    bad, words = BAD_IMAGES[case]
    images = [JPEG, PNG, JPEG]
    images[position - 1] = bad
    batches = metric(server.url, "resnet_serve_batch_size_count", model=MODEL)

    message = assert_error(_post_files(server, CLASSIFY, images), 400, words)

    assert re.search(rf"\bimage {position} of 3\b", message), message
    # Refused before the queue: not even the good images were run.
    assert metric(server.url, "resnet_serve_batch_size_count", model=MODEL) == batches


@pytest.mark.parametrize("body,content_type,words", [
    (b"", "multipart/form-data; boundary=x", "no image"),
    (b"--x\r\nContent-Disposition: form-data; name=\"picture\"; filename=\"a.png\"\r\n\r\n"
     + PNG + b"\r\n--x--\r\n", "multipart/form-data; boundary=x", "no image in multipart field"),
    (b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nhello\r\n--x--\r\n",
     "multipart/form-data; boundary=x", "must be a file upload"),
    (b"--x\r\n", "multipart/form-data", "boundary"),
], ids=["no-parts", "other-field-only", "text-field", "no-boundary"])
def test_multipart_without_an_image_is_400(server: ServerProcess, body: bytes,
                                           content_type: str, words: str) -> None:
    assert_error(_post_raw(server, CLASSIFY, body, content_type), 400, words)


# --- content type, model, route, method, parameters -----------------------------------

@pytest.mark.parametrize("route", [CLASSIFY, SUBNETWORK])
@pytest.mark.parametrize("content_type,named", [
    ("application/json", "'application/json'"),
    ("text/plain; charset=utf-8", "'text/plain'"),
    ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
    (None, "(none)"),
])
def test_unsupported_content_type_is_415(server: ServerProcess, route: str,
                                         content_type: str | None, named: str) -> None:
    response = _post_raw(server, route, PNG, content_type)
    assert_error(response, 415, "unsupported content type", named, "multipart/form-data")


@pytest.mark.parametrize("method,route", [
    ("POST", CLASSIFY), ("POST", SUBNETWORK), ("GET", METADATA),
])
def test_unknown_model_is_404_naming_it(server: ServerProcess, method: str, route: str) -> None:
    response = httpx.request(method, _url(server, route, "resnet21-cifar10"),
                             content=PNG if method == "POST" else None,
                             headers={"Content-Type": "image/png"}, timeout=30)
    assert_error(response, 404, "'resnet21-cifar10'", "not loaded")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/nothing"),
    ("GET", "/v1/models/resnet20-cifar10/classify/more"),
    ("POST", "/v1/models/resnet20-cifar10/clasify"),
    ("GET", "/v3/models"),
])
def test_unknown_route_is_404_naming_it(server: ServerProcess, method: str, path: str) -> None:
    response = httpx.request(method, server.url + path, timeout=30)
    assert_error(response, 404, "no route", repr(path))


@pytest.mark.parametrize("method,route,allowed", [
    ("GET", CLASSIFY, "POST"),
    ("PUT", SUBNETWORK, "POST"),
    ("DELETE", METADATA, "GET"),
    ("POST", "/v1/models", "GET"),
])
def test_wrong_method_is_405_with_allow(server: ServerProcess, method: str, route: str,
                                        allowed: str) -> None:
    path = route.replace("{model}", MODEL)
    response = httpx.request(method, server.url + path, timeout=30)
    assert_error(response, 405, f"method {method} not allowed", repr(path))
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("route", [CLASSIFY, SUBNETWORK])
@pytest.mark.parametrize("top_k,words", [
    ("0", "greater than or equal to 1"),
    ("-1", "greater than or equal to 1"),
    ("abc", "valid integer"),
    ("1.5", "valid integer"),
    ("", "valid integer"),
])
def test_invalid_top_k_is_422_naming_it(server: ServerProcess, route: str, top_k: str,
                                        words: str) -> None:
    response = _post_raw(server, route, PNG, "image/png", top_k=top_k)
    assert_error(response, 422, "top_k", words)


# --- the schema declares them ------------------------------------------------------------

@pytest.fixture(scope="module")
def openapi(server: ServerProcess) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return schema


@pytest.mark.parametrize("method,route,code", [
    *[("post", route, code) for route in (CLASSIFY, SUBNETWORK)
      for code in (400, 404, 413, 415, 422, 500, 503, 504)],
    ("get", METADATA, 404),
])
def test_openapi_declares_each_error_with_the_error_shape(
    openapi: dict[str, Any], method: str, route: str, code: int
) -> None:
    responses = openapi["paths"][route][method]["responses"]
    assert str(code) in responses, f"{method.upper()} {route} does not declare {code}"
    media = responses[str(code)]["content"]["application/json"]
    assert media["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_openapi_error_responses_all_have_the_error_shape(openapi: dict[str, Any]) -> None:
    """FastAPI's own 422 (`{"detail": [...]}`) included: the service never answers it."""
    wrong = [
        f"{method.upper()} {path} {code}"
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
        for code, answer in operation["responses"].items()
        if int(code) >= 400
        and answer.get("content", {}).get("application/json", {}).get("schema")
        != {"$ref": "#/components/schemas/ErrorBody"}
    ]
    assert wrong == []
    assert openapi["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


# --- and the server goes on ----------------------------------------------------------------

def test_server_still_serves_after_every_error(server: ServerProcess) -> None:
    response = _post_raw(server, CLASSIFY, PNG, "image/png")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top"][0]["label"] == "cat"
    assert httpx.get(f"{server.url}/health/ready", timeout=10).status_code == 200
    assert server.process.poll() is None
    # Client mistakes are not the service's errors: no traceback for any of them.
    assert "Traceback" not in server.log()
