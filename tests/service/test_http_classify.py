"""Classification over real HTTP against a real server: formats, modes, answers."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import CIFAR_SAMPLES, ServerProcess, sample_label

CAT = next(path for path in CIFAR_SAMPLES if path.name == "cifar10_00_3.png")


def _classify(
    server: ServerProcess, model: str, files: list[bytes], **params: object
) -> httpx.Response:
    parts = [
        ("file", (f"image{i}", data, "application/octet-stream"))
        for i, data in enumerate(files)
    ]
    return httpx.post(f"{server.url}/v1/models/{model}/classify", files=parts, params=params,
                      timeout=30)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("model", ["resnet20-cifar10", "resnet56-cifar10"])
def test_lossless_samples_score_19_or_20(server: ServerProcess, model: str) -> None:
    response = _classify(server, model, [path.read_bytes() for path in CIFAR_SAMPLES], top_k=1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["version"] == "1"
    predicted = [item["top"][0]["class_id"] for item in body["predictions"]]
    correct = sum(p == sample_label(path) for p, path in zip(predicted, CIFAR_SAMPLES))
    assert len(predicted) == 20
    assert correct >= 19


def test_raw_image_body_equals_multipart(server: ServerProcess) -> None:
    data = CAT.read_bytes()
    raw = httpx.post(f"{server.url}/v1/models/resnet56-cifar10/classify", content=data,
                     headers={"Content-Type": "image/png"}, timeout=30)
    form = _classify(server, "resnet56-cifar10", [data])
    assert raw.status_code == form.status_code == 200
    assert raw.json()["predictions"] == form.json()["predictions"]
    top = raw.json()["predictions"][0]["top"]
    assert [entry["label"] for entry in top][0] == "cat"
    assert len(top) == 5
    assert all(a["probability"] >= b["probability"] for a, b in zip(top, top[1:]))


def test_top_k_larger_than_classes_returns_all(server: ServerProcess) -> None:
    response = _classify(server, "resnet20-cifar10", [CAT.read_bytes()], top_k=1000)
    top = response.json()["predictions"][0]["top"]
    assert sorted(entry["class_id"] for entry in top) == list(range(10))
    assert sum(entry["probability"] for entry in top) == pytest.approx(1.0, abs=1e-5)


def _variants() -> dict[str, bytes]:
    """The cat sample in every accepted format and colour mode."""
    rgb = Image.open(CAT).convert("RGB")
    big = rgb.resize((96, 96), Image.Resampling.BICUBIC)
    sixteen = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    cmyk = rgb.convert("CMYK")
    rgba = rgb.convert("RGBA")
    return {
        "png-rgb": _encode(rgb, "PNG"),
        "png-rgba": _encode(rgba, "PNG"),
        "png-palette": _encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png-greyscale": _encode(rgb.convert("L"), "PNG"),
        "png-greyscale-alpha": _encode(rgb.convert("LA"), "PNG"),
        "png-16bit": _encode(Image.fromarray(sixteen), "PNG"),
        "png-1bit": _encode(rgb.convert("1"), "PNG"),
        "jpeg-rgb": _encode(big, "JPEG", quality=95),
        "jpeg-greyscale": _encode(big.convert("L"), "JPEG", quality=95),
        "jpeg-cmyk": _encode(cmyk, "JPEG", quality=95),
        "webp": _encode(big, "WEBP", lossless=True),
        "webp-alpha": _encode(rgba, "WEBP", lossless=True),
        "bmp": _encode(rgb, "BMP"),
        "tiff": _encode(rgb, "TIFF"),
        "tiff-cmyk": _encode(cmyk, "TIFF"),
        "tiff-16bit": _encode(Image.fromarray(sixteen), "TIFF"),
        "gif": _encode(rgb, "GIF"),
    }


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_every_format_and_mode_is_classified(server: ServerProcess, variant: str) -> None:
    data = _variants()[variant]
    response = _classify(server, "resnet56-cifar10", [data])
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]["top"]
    probabilities = [entry["probability"] for entry in top]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    # Colour-preserving encodings of the cat must still be a cat.
    if not any(word in variant for word in ("greyscale", "16bit", "1bit", "palette", "gif")):
        assert top[0]["label"] == "cat", variant


def test_exif_orientation_is_applied(server: ServerProcess) -> None:
    rgb = Image.open(CAT).convert("RGB")
    upright = _encode(rgb, "PNG")
    # Stored rotated, with an EXIF tag that says how to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored = _encode(rgb.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif.tobytes())
    first = _classify(server, "resnet56-cifar10", [upright], top_k=10).json()
    second = _classify(server, "resnet56-cifar10", [stored], top_k=10).json()
    a = {e["class_id"]: e["probability"] for e in first["predictions"][0]["top"]}
    b = {e["class_id"]: e["probability"] for e in second["predictions"][0]["top"]}
    assert a == pytest.approx(b, abs=1e-6)


def test_gif_uses_first_frame(server: ServerProcess) -> None:
    cat = Image.open(CAT).convert("RGB")
    other = Image.open(CIFAR_SAMPLES[1]).convert("RGB")
    buffer = io.BytesIO()
    cat.save(buffer, format="GIF", save_all=True, append_images=[other])
    animated = _classify(server, "resnet56-cifar10", [buffer.getvalue()], top_k=10).json()
    still = _classify(server, "resnet56-cifar10", [_encode(cat, "GIF")], top_k=10).json()
    assert animated["predictions"] == still["predictions"]


def test_request_id_is_echoed_or_created(server: ServerProcess) -> None:
    given = httpx.get(f"{server.url}/v1/models", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    fresh = httpx.get(f"{server.url}/v1/models")
    assert len(fresh.headers["x-request-id"]) >= 16
