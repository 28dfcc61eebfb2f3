"""How a loaded model looks through the Open Inference Protocol: metadata,
Triton's model configuration, and Triton's statistics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from service.registry import LoadedModel

PLATFORM = "onnxruntime_onnx"
TENSOR_INPUT = "input"
IMAGE_INPUT = "image"
OUTPUTS = ("logits", "probabilities")


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    """`GET /v2/models/{model}`: the batch dimension is -1."""
    classes = len(model.runtime.labels)
    return {
        "name": model.name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": [
            {"name": TENSOR_INPUT, "datatype": "FP32",
             "shape": [-1, *model.runtime.input_shape]},
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [-1, classes]} for name in OUTPUTS
        ],
    }


def model_config(model: LoadedModel) -> dict[str, Any]:
    """Triton's model configuration as JSON; perf_analyzer reads it before it runs."""
    batching = model.batcher.config
    on_gpu = model.runtime.provider != "CPUExecutionProvider"
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": batching.max_batch_size,
        "input": [
            {"name": TENSOR_INPUT, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
             "dims": list(model.runtime.input_shape), "optional": False},
            # An encoded image per row instead of `input`: a request has one of the two.
            {"name": IMAGE_INPUT, "data_type": "TYPE_STRING", "format": "FORMAT_NONE",
             "dims": [1], "optional": True},
        ],
        "output": [
            {"name": name, "data_type": "TYPE_FP32", "dims": [len(model.runtime.labels)]}
            for name in OUTPUTS
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        },
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
        "parameters": {"execution_provider": {"string_value": model.runtime.provider}},
    }


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class RequestStatistics:
    """What the `/v2` infer requests of one model cost, from the route's own clock."""

    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    last_inference_ms: int = 0


@dataclass
class RequestTimes:
    """Seconds one successful request spent in each step."""

    total_s: float
    input_s: float
    batcher_s: float
    output_s: float


class StatisticsBook:
    """Triton-shaped statistics of the `/v2` infer requests, per model version.

    `compute_input` is parsing and decoding, `compute_output` encoding the
    answer. A request does not learn how long its batch ran, only how long
    it spent in the batcher, so that time is split using the model's mean
    batch run time so far (the batcher's running totals): that mean is
    `compute_infer`, the rest `queue`. The inference and execution counts,
    and `batch_stats`, are the version's images and batches over every API,
    as in Triton, where they count every protocol's requests too.
    """

    def __init__(self) -> None:
        self._by_model: dict[tuple[str, int], RequestStatistics] = {}
        self._lock = threading.Lock()

    def of(self, model: LoadedModel) -> RequestStatistics:
        key = (model.name, model.version)
        with self._lock:
            return self._by_model.setdefault(key, RequestStatistics())

    def record_success(self, model: LoadedModel, times: RequestTimes) -> None:
        stats = self.of(model)
        infer_s = min(times.batcher_s, model.batcher.totals.mean_seconds)
        stats.success.add(times.total_s)
        stats.compute_input.add(times.input_s)
        stats.queue.add(times.batcher_s - infer_s)
        stats.compute_infer.add(infer_s)
        stats.compute_output.add(times.output_s)
        stats.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, model: LoadedModel, seconds: float) -> None:
        self.of(model).fail.add(seconds)

    def model_stats(self, model: LoadedModel) -> dict[str, Any]:
        stats = self.of(model)
        totals = model.batcher.totals
        steps = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        inference_stats = {step: getattr(stats, step).as_json() for step in steps}
        return {
            "name": model.name,
            "version": str(model.version),
            "last_inference": stats.last_inference_ms,
            "inference_count": totals.images,
            "execution_count": totals.batches,
            "inference_stats": {
                **inference_stats,
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                _batch_size_stats(size, int(count), seconds)
                for size, (count, seconds) in sorted(totals.by_size.items())
            ],
        }


def _batch_size_stats(size: int, count: int, seconds: float) -> dict[str, Any]:
    """Triton's entry for one batch size; only the run itself is timed per batch."""
    nanoseconds = int(seconds * 1e9)
    return {
        "batch_size": size,
        "compute_input": {"count": count, "ns": 0},
        "compute_infer": {"count": count, "ns": nanoseconds},
        "compute_output": {"count": count, "ns": 0},
    }
