"""The /v2 wire format byte by byte, over real HTTP: JSON and binary bodies,
errors and their codes, deadlines, queue limits, statistics and metrics; and
the codec's refusals of malformed tensor data, called directly."""

from __future__ import annotations

import base64
import json
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.v2_codec import parse_infer_request
from service.errors import InvalidInputError
from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import metric, wait_for

MODEL = "resnet20-cifar10"
CAT = next(path for path in CIFAR_SAMPLES if path.name == "cifar10_00_3.png")


def _infer(server: ServerProcess, body: dict[str, Any] | bytes, model: str = MODEL,
           headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=content,
                      headers=headers, timeout=30)


def _binary_request(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(chunks), {"Inference-Header-Content-Length": str(len(text))}


def _tensor(rng: np.random.Generator, batch: int = 2) -> np.ndarray:
    return rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)


def _outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.reshape(o["data"], o["shape"]) for o in response.json()["outputs"]}


def test_nested_flat_and_binary_tensors_agree(server: ServerProcess) -> None:
    batch = _tensor(np.random.default_rng(0))
    entry = {"name": "input", "datatype": "FP32", "shape": list(batch.shape)}
    nested = _outputs(_infer(server, {"inputs": [{**entry, "data": batch.tolist()}]}))
    flat = _outputs(_infer(server, {"inputs": [{**entry, "data": batch.ravel().tolist()}]}))

    body, headers = _binary_request(
        {"inputs": [{**entry, "parameters": {"binary_data_size": batch.nbytes}}],
         "parameters": {"binary_data_output": True}},
        batch.astype("<f4").tobytes(),
    )
    response = _infer(server, body, headers=headers)
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [2 * 10 * 4, 2 * 10 * 4]
    logits = np.frombuffer(response.content[length:length + sizes[0]], dtype="<f4")

    np.testing.assert_allclose(nested["logits"], flat["logits"], atol=1e-5)
    np.testing.assert_allclose(logits.reshape(2, 10), flat["logits"], atol=1e-5)
    assert nested["probabilities"].shape == (2, 10)


def test_binary_bytes_images_mixed_with_json_outputs(server: ServerProcess) -> None:
    images = [CAT.read_bytes(), CIFAR_SAMPLES[1].read_bytes()]
    data = b"".join(struct.pack("<I", len(image)) + image for image in images)
    body, headers = _binary_request(
        {"id": "7", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                "parameters": {"binary_data_size": len(data)}}],
         "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]},
        data,
    )
    response = _infer(server, body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "7" and answer["model_name"] == MODEL
    assert answer["outputs"][0]["datatype"] == "BYTES"
    assert answer["outputs"][0]["data"][0].endswith(":3:cat")


def test_both_inputs_answer_from_the_tensor(server: ServerProcess) -> None:
    batch = _tensor(np.random.default_rng(1), batch=1)
    entry = {"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
             "data": batch.ravel().tolist()}
    alone = _outputs(_infer(server, {"inputs": [entry]}))
    garbage = {"name": "image", "datatype": "BYTES", "shape": [1, 1],
               "data": [base64.b64encode(b"not an image").decode()]}
    both = _outputs(_infer(server, {"inputs": [garbage, entry]}))
    np.testing.assert_allclose(both["logits"], alone["logits"], atol=1e-5)


def _fp32(shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": shape, "data": data}


ZEROS = [0.0] * 3072
BAD_REQUESTS = {
    "not json": b"{inputs",
    "no inputs": {"inputs": []},
    "wrong datatype": {"inputs": [{**_fp32([1, 3, 32, 32], ZEROS), "datatype": "FP16"}]},
    "wrong shape": {"inputs": [_fp32([1, 3, 16, 64], ZEROS)]},
    "count does not match shape": {"inputs": [_fp32([1, 3, 32, 32], ZEROS[:-1])]},
    "ragged": {"inputs": [_fp32([2, 2], [[1.0, 2.0], [3.0]])]},
    "strings as numbers": {"inputs": [_fp32([1, 3, 32, 32], ["1"] * 3072)]},
    "unknown input": {"inputs": [{**_fp32([1, 3, 32, 32], ZEROS), "name": "pixels"}]},
    "block mask as input": {"inputs": [{"name": "block_mask", "datatype": "FP32",
                                        "shape": [1, 9], "data": [1.0] * 9}]},
    "given twice": {"inputs": [_fp32([1, 3, 32, 32], ZEROS)] * 2},
    "NaN": b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
    "beyond FP32": {"inputs": [_fp32([1, 3, 32, 32], [1e39] + ZEROS[1:])]},
    "bad base64": {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                               "data": ["%%% not base64"]}]},
    "corrupt image": {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                  "data": [base64.b64encode(b"GIF89a....").decode()]}]},
    "unknown output": {"inputs": [_fp32([1, 3, 32, 32], ZEROS)],
                       "outputs": [{"name": "features"}]},
    "invalid remove": {"inputs": [_fp32([1, 3, 32, 32], ZEROS)],
                       "parameters": {"remove": "0,layer7.3"}},
    "remove of wrong type": {"inputs": [_fp32([1, 3, 32, 32], ZEROS)],
                             "parameters": {"remove": {"block": 0}}},
    "invalid timeout": {"inputs": [_fp32([1, 3, 32, 32], ZEROS)],
                        "parameters": {"timeout": -5}},
}


@pytest.mark.parametrize("body", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_are_400(server: ServerProcess, body: dict[str, Any] | bytes) -> None:
    response = _infer(server, body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]


@pytest.mark.parametrize("header_length, tail", [("999999", b""), ("abc", b""), (None, b"x")])
def test_bad_binary_layout_is_400(
    server: ServerProcess, header_length: str | None, tail: bytes
) -> None:
    zeros = np.zeros((1, 3, 32, 32), dtype="<f4").tobytes()
    body, headers = _binary_request(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                     "parameters": {"binary_data_size": len(zeros)}}]},
        zeros, tail,
    )
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = _infer(server, body, headers=headers)
    assert response.status_code == 400, response.text


def test_unknown_model_and_version_are_404(server: ServerProcess) -> None:
    body = {"inputs": [_fp32([1, 3, 32, 32], ZEROS)]}
    assert _infer(server, body, model="resnet21-cifar10").status_code == 404
    url = f"{server.url}/v2/models/{MODEL}/versions/2/infer"
    assert httpx.post(url, json=body, timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/v2/models/nope/config", timeout=10).status_code == 404


def test_timeout_parameter_is_the_deadline(server: ServerProcess) -> None:
    body = {"inputs": [_fp32([1, 3, 32, 32], ZEROS)], "parameters": {"timeout": 1}}
    response = _infer(server, body)
    assert response.status_code == 504, response.text


def test_statistics_and_metrics_count_v2_requests(server: ServerProcess) -> None:
    def successes() -> int:
        stats = httpx.get(f"{server.url}/v2/models/{MODEL}/stats", timeout=10).json()
        (entry,) = stats["model_stats"]
        assert entry["name"] == MODEL and entry["version"] == "1"
        return int(entry["inference_stats"]["success"]["count"])

    before = successes()
    for _ in range(3):
        assert _infer(server, {"inputs": [_fp32([1, 3, 32, 32], ZEROS)]}).status_code == 200
    assert successes() == before + 3

    # Images and batches of every API, by batch size, as the batcher counted them.
    (entry,) = httpx.get(f"{server.url}/v2/models/{MODEL}/stats", timeout=10).json()[
        "model_stats"]
    by_size = {item["batch_size"]: item for item in entry["batch_stats"]}
    assert entry["execution_count"] == sum(
        item["compute_infer"]["count"] for item in by_size.values())
    assert entry["inference_count"] == sum(
        size * item["compute_infer"]["count"] for size, item in by_size.items())
    assert entry["inference_count"] == metric(
        server.url, "resnet_serve_batch_size_sum", model=MODEL)
    assert all(item["compute_infer"]["ns"] > 0 for item in by_size.values())

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert (f'resnet_serve_requests_total{{code="200",endpoint="/v2/models/{{model}}/infer",'
            f'model="{MODEL}",network="full"}}') in text
    everything = httpx.get(f"{server.url}/v2/models/stats", timeout=10).json()
    assert {entry["name"] for entry in everything["model_stats"]} >= {MODEL}


@pytest.fixture(scope="module")
def tiny_queue_server(repository: Path) -> Iterator[ServerProcess]:
    """One image fits in the queue, and waits there a second for company."""
    with running_server(repository, models=MODEL, max_queue_size=1,
                        max_queue_delay_ms=1000) as process:
        yield process


def test_full_queue_is_503(tiny_queue_server: ServerProcess) -> None:
    one = {"inputs": [_fp32([1, 3, 32, 32], ZEROS)]}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_infer, tiny_queue_server, one)
        wait_for(lambda: metric(tiny_queue_server.url, "resnet_serve_queue_depth",
                                model=MODEL) == 1, 10, "the first request to be queued")
        refused = _infer(tiny_queue_server, one)
        accepted = waiting.result()

    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers
    assert accepted.status_code == 200, accepted.text
    health = httpx.get(f"{tiny_queue_server.url}/v2/health/ready", timeout=10)
    assert health.status_code == 200


def test_more_images_than_the_queue_holds_is_413(tiny_queue_server: ServerProcess) -> None:
    response = _infer(tiny_queue_server, {"inputs": [_fp32([2, 3, 32, 32], ZEROS * 2)]})
    assert response.status_code == 413, response.text
    assert "holds at most 1" in response.json()["error"]


def _parse_fp32(data: Any, shape: list[int]) -> np.ndarray:
    """Decode one FP32 input straight through the codec, no server involved."""
    return _parse_fp32_text(json.dumps(data), shape)


def _parse_fp32_text(data: str, shape: list[int]) -> np.ndarray:
    entry = json.dumps(_fp32(shape, None)).replace("null", data)
    body = f'{{"inputs": [{entry}]}}'.encode()
    request = parse_infer_request(body, None, {"input": "FP32"}, max_depth=32)
    values = request.inputs[0].values
    assert isinstance(values, np.ndarray)
    return values


# As the client writes them: JSON reads 1e400 as Inf and 10**400 as an int.
@pytest.mark.parametrize(
    "value", ["1e39", "-1e39", "1e400", "1" + "0" * 40, "1" + "0" * 400],
    ids=["1e39", "-1e39", "1e400", "10**40", "10**400"],
)
def test_values_beyond_fp32_are_refused_without_a_warning(value: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match="beyond FP32's range"):
            _parse_fp32_text(f"[{value}, 0.0]", [2])


def test_largest_fp32_values_are_taken() -> None:
    largest = float(np.finfo(np.float32).max)
    values = _parse_fp32([largest, -largest, 1, 0.5], [4])
    assert values.dtype == np.float32 and values.tolist() == [largest, -largest, 1.0, 0.5]


@pytest.mark.parametrize(
    "data, found",
    [
        (["1"] * 4, "got strings$"),
        ([[1.0, "2"], [3.0, 4.0]], "got strings$"),
        ([True, 1.0, 2.0, 3.0], r"got booleans \(true/false\)$"),
        ([[False, True], [True, False]], r"got booleans \(true/false\)$"),
        ([1.0, None, 2.0, 3.0], "got null$"),
        ([[1.0, 2.0], [3.0]], r"got lists of unequal lengths \(ragged"),
    ],
    ids=["strings", "a string", "a boolean", "booleans", "null", "ragged"],
)
def test_fp32_data_holding_other_than_numbers_is_named(data: Any, found: str) -> None:
    with pytest.raises(InvalidInputError, match=found):
        _parse_fp32(data, [4])


def test_fp32_count_mismatch_says_how_many_numbers() -> None:
    with pytest.raises(InvalidInputError, match=r"must hold 4 numbers .* got 3$"):
        _parse_fp32([1.0, 2.0, 3.0], [4])
