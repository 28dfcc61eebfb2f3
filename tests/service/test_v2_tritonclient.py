"""Triton's own Python HTTP client, unmodified, against the real server's /v2."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.manifest import Preprocessing
from models.preprocessing import decode_and_preprocess
from tests.helpers import CIFAR_SAMPLES, ServerProcess

httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "resnet56-cifar10"
SAMPLES = CIFAR_SAMPLES[:4]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def _preprocessing(server: ServerProcess) -> Preprocessing:
    meta = httpx.get(f"{server.url}/v1/models/{MODEL}", timeout=10).json()
    return Preprocessing(**{
        key: tuple(value) if isinstance(value, list) else value
        for key, value in meta["preprocessing"].items()
    })


def _v1_probabilities(server: ServerProcess, paths: list[Path], **params: object) -> np.ndarray:
    """Per image, the probability of every class, as /v1 answers."""
    route = "subnetwork/classify" if "remove" in params else "classify"
    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]
    response = httpx.post(f"{server.url}/v1/models/{MODEL}/{route}", files=files,
                          params={"top_k": 10, **params}, timeout=30)
    assert response.status_code == 200, response.text
    rows = np.zeros((len(paths), 10), dtype=np.float32)
    for row, prediction in enumerate(response.json()["predictions"]):
        for entry in prediction["top"]:
            rows[row, entry["class_id"]] = entry["probability"]
    return rows


def _tensor_input(server: ServerProcess, binary: bool) -> httpclient.InferInput:
    spec = _preprocessing(server)
    batch = np.stack([decode_and_preprocess(path.read_bytes(), spec) for path in SAMPLES])
    tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def _image_input(binary: bool) -> httpclient.InferInput:
    encoded = [path.read_bytes() for path in SAMPLES]
    if not binary:
        encoded = [base64.b64encode(data) for data in encoded]
    tensor = httpclient.InferInput("image", [len(SAMPLES), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(encoded, dtype=object).reshape(-1, 1), binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "resnet-serve"
    assert {"binary_tensor_data", "classification", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    inputs = {entry["name"]: entry for entry in metadata["inputs"]}
    assert inputs["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    assert inputs["image"]["datatype"] == "BYTES"
    assert "block_mask" not in inputs
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]

    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] >= 1
    assert {(i["name"], i["data_type"], i.get("optional", False)) for i in config["input"]} == {
        ("input", "TYPE_FP32", False), ("image", "TYPE_STRING", True),
    }
    assert config["input"][0]["dims"] == [3, 32, 32]
    assert all(output["dims"] == [10] for output in config["output"])
    assert "dynamic_batching" in config


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", ["tensor", "image"])
def test_infer_equals_v1(
    server: ServerProcess, client: httpclient.InferenceServerClient, binary: bool, kind: str
) -> None:
    tensor = _tensor_input(server, binary) if kind == "tensor" else _image_input(binary)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary)
               for name in ("logits", "probabilities")]
    result = client.infer(MODEL, [tensor], outputs=outputs)

    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(SAMPLES), 10)
    np.testing.assert_allclose(probabilities, _v1_probabilities(server, SAMPLES), atol=1e-5)
    logits = result.as_numpy("logits")
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, probabilities, atol=1e-5)


def test_defaults_send_binary_and_return_every_output(
    server: ServerProcess, client: httpclient.InferenceServerClient
) -> None:
    result = client.infer(MODEL, [_tensor_input(server, binary=True)], request_id="abc-17")
    response = result.get_response()
    assert response["id"] == "abc-17"
    assert all(o["parameters"]["binary_data_size"] > 0 for o in response["outputs"])
    assert result.as_numpy("logits").shape == (len(SAMPLES), 10)


def test_classification_output(client: httpclient.InferenceServerClient) -> None:
    cat = next(path for path in CIFAR_SAMPLES if path.name == "cifar10_00_3.png")
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([cat.read_bytes()], dtype=object))
    output = httpclient.InferRequestedOutput("probabilities", class_count=3)
    top = client.infer(MODEL, [tensor], outputs=[output]).as_numpy("probabilities")

    assert top.shape == (1, 3)
    fields = [entry.decode().split(":") for entry in top[0]]
    assert fields[0][1:] == ["3", "cat"]
    scores = [float(score) for score, _, _ in fields]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1


def test_remove_parameter_equals_v1_subnetwork(
    server: ServerProcess, client: httpclient.InferenceServerClient
) -> None:
    result = client.infer(MODEL, [_image_input(binary=True)],
                          parameters={"remove": "0,layer2.0"})
    expected = _v1_probabilities(server, SAMPLES, remove="0,layer2.0")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    assert result.get_response()["parameters"]["remove"] == "0,9"

    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [_image_input(binary=True)], parameters={"remove": "layer9.9"})
    assert error.value.status() == "400"
    assert "layer9.9" in error.value.message()


def test_errors_reach_the_client(
    server: ServerProcess, client: httpclient.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.infer("resnet999-cifar10", [_image_input(binary=True)])
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException) as error:
        client.get_model_metadata(MODEL, "7")
    assert error.value.status() == "404"

    wrong = httpclient.InferInput("input", [1, 3, 16, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 16, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [wrong])
    assert error.value.status() == "400" and "[N, 3, 32, 32]" in error.value.message()
