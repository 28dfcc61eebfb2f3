"""An ONNX Runtime failure in one batch fails that batch only, never the service.

The model here is built for the purpose: a small ONNX graph with the interface
of our exports (inputs `input` and `block_mask`, outputs `logits` and
`probabilities`, a `metadata.json` sidecar) that classifies any image, except
that a pixel of value 13 in any channel makes its Gather index run out of
range, so that ONNX Runtime itself fails the whole batch that holds it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import metric, png

FAULTY = "faulty-net"
SIZE = 8
LABELS = ["low", "middle", "high"]
SENTINEL = 13  # pixel value; preprocessing keeps it as 13 / 255 (mean 0, std 1)
BATCH = 4


def _faulty_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3 * SIZE * SIZE, len(LABELS))).astype(np.float32)
    block_weights = rng.normal(size=(2, len(LABELS))).astype(np.float32)
    constants = [
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(block_weights, "block_weights"),
        numpy_helper.from_array(np.float32(SENTINEL / 255), "sentinel"),
        numpy_helper.from_array(np.float32(0.5 / 255), "tolerance"),
        numpy_helper.from_array(np.arange(len(LABELS), dtype=np.int64), "classes"),
        numpy_helper.from_array(np.int64(1000), "far"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
        helper.make_node("MatMul", ["block_mask", "block_weights"], ["block_scores"]),
        helper.make_node("Add", ["scores", "block_scores"], ["raw_logits"]),
        # hit = any |input - sentinel| < tolerance, anywhere in the batch
        helper.make_node("Sub", ["input", "sentinel"], ["offset"]),
        helper.make_node("Abs", ["offset"], ["distance"]),
        helper.make_node("ReduceMin", ["distance"], ["nearest"], keepdims=0),
        helper.make_node("Less", ["nearest", "tolerance"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["hit_count"], to=TensorProto.INT64),
        helper.make_node("Mul", ["hit_count", "far"], ["shift"]),
        helper.make_node("Add", ["classes", "shift"], ["indices"]),
        helper.make_node("Gather", ["raw_logits", "indices"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, FAULTY,
        inputs=[
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("block_mask", TensorProto.FLOAT, ["batch", 2]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", len(LABELS)]
            ),
        ],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _faulty_metadata() -> dict[str, object]:
    """A sidecar with the keys of `models.export.build_metadata`."""
    blocks = [
        {"index": i, "name": f"layer1.{i}", "stage": "layer1", "downsample": False,
         "params": 0, "macs": 0}
        for i in range(2)
    ]
    return {
        "name": FAULTY, "version": "1", "description": "fails on a sentinel pixel",
        "dataset": "synthetic",
        "architecture": {"name": "faulty", "family": "cifar", "depth": 2,
                         "preactivation": False, "block_type": "none",
                         "stages": ["layer1"], "num_blocks": 2},
        "input": {"name": "input", "shape": [-1, 3, SIZE, SIZE], "dtype": "float32"},
        "mask_input": {"name": "block_mask", "shape": [-1, 2], "dtype": "float32"},
        "outputs": [{"name": name, "shape": [-1, len(LABELS)], "dtype": "float32"}
                    for name in ("logits", "probabilities")],
        "preprocessing": {"resize": SIZE, "crop": None, "mean": [0.0, 0.0, 0.0],
                          "std": [1.0, 1.0, 1.0], "interpolation": "nearest"},
        "labels": LABELS, "blocks": blocks, "total_params": 0, "total_macs": 0,
        "pretrained": True, "source": {"kind": "checkpoint"}, "opset": 17,
        "exporter": {}, "exported_at": "2026-01-01T00:00:00Z",
    }


@pytest.fixture(scope="module")
def faulty_server(repository: Path, tmp_path_factory: pytest.TempPathFactory,
                  ) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("faulty") / "repository"
    folder = root / FAULTY / "1"
    folder.mkdir(parents=True)
    onnx.save(_faulty_graph(), str(folder / "model.onnx"))
    (folder / "metadata.json").write_text(json.dumps(_faulty_metadata()))
    shutil.copytree(repository / "resnet20-cifar10", root / "resnet20-cifar10")

    with running_server(root, models=f"{FAULTY},resnet20-cifar10",
                        max_batch_size=BATCH, max_queue_delay_ms=400) as process:
        yield process


def _classify(url: str, model: str, image: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{model}/classify", content=image,
                      headers={"Content-Type": "image/png"}, timeout=30)


def test_sentinel_fails_inside_onnx_runtime_only() -> None:
    """The graph itself: the sentinel fails in ONNX Runtime, other inputs do not."""
    import onnxruntime as ort

    session = ort.InferenceSession(_faulty_graph().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    inputs = np.full((2, 3, SIZE, SIZE), 0.5, dtype=np.float32)
    mask = np.ones((2, 2), dtype=np.float32)
    logits, probabilities = session.run(None, {"input": inputs, "block_mask": mask})
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0])
    inputs[1, 2, 3, 4] = SENTINEL / 255
    with pytest.raises(Exception, match="out of"):
        session.run(None, {"input": inputs, "block_mask": mask})


def test_failed_batch_answers_500_and_other_batches_go_on(faulty_server: ServerProcess) -> None:
    url = faulty_server.url
    failures = metric(url, "resnet_serve_batch_failures_total", model=FAULTY)
    sentinel = png((SENTINEL, 200, 200), (SIZE, SIZE))
    plain = [png((40 * i, 100, 220 - 20 * i), (SIZE, SIZE)) for i in range(2 * BATCH - 1)]

    # Two batches' worth at once: the sentinel's batch fails, the other must not.
    with ThreadPoolExecutor(2 * BATCH) as pool:
        answers = list(pool.map(lambda image: _classify(url, FAULTY, image), [sentinel, *plain]))

    assert answers[0].status_code == 500
    message = answers[0].json()["error"]
    assert "ONNX Runtime" in message and "batch" in message
    failed = [answer for answer in answers if answer.status_code == 500]
    served = [answer for answer in answers if answer.status_code == 200]
    assert len(failed) + len(served) == len(answers), [a.status_code for a in answers]
    assert len(failed) <= BATCH, "requests outside the sentinel's batch failed"
    assert all(answer.json()["error"] == message for answer in failed)
    assert metric(url, "resnet_serve_batch_failures_total", model=FAULTY) == failures + 1

    # The model, the other model and readiness are all still fine.
    again = [_classify(url, FAULTY, image) for image in plain[:2]]
    assert [answer.status_code for answer in again] == [200, 200]
    assert len(again[0].json()["predictions"][0]["top"]) == len(LABELS)
    other = _classify(url, "resnet20-cifar10", CIFAR_SAMPLES[0].read_bytes())
    assert other.status_code == 200
    assert httpx.get(f"{url}/health/ready").status_code == 200
    assert faulty_server.process.poll() is None
