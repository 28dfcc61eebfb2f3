"""Prometheus metrics, defined once. Labels are bounded: configured model names,
route templates, status codes and the network kind (full or subnetwork), never
request ids or sets of blocks."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "resnet_serve_"

#: Label value for requests that name no configured model (unknown, or none).
UNKNOWN_MODEL = "_unknown"

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter(
    PREFIX + "requests",
    "HTTP requests by model, route template, status code and network kind.",
    ["model", "endpoint", "code", "network"],
)
REQUEST_DURATION = Histogram(
    PREFIX + "request_duration_seconds",
    "Time from request received to response ready.",
    ["model", "endpoint", "network"],
    buckets=LATENCY_BUCKETS_S,
)
QUEUE_WAIT = Histogram(
    PREFIX + "queue_wait_seconds",
    "Time an image waited in its model's queue before its batch ran.",
    ["model"],
    buckets=LATENCY_BUCKETS_S,
)
INFERENCE_DURATION = Histogram(
    PREFIX + "inference_duration_seconds",
    "ONNX Runtime time per batch.",
    ["model"],
    buckets=LATENCY_BUCKETS_S,
)
BATCH_SIZE = Histogram(
    PREFIX + "batch_size",
    "Images per batch run.",
    ["model"],
    buckets=BATCH_BUCKETS,
)
BATCH_FAILURES = Counter(
    PREFIX + "batch_failures",
    "Batches that ONNX Runtime failed to run.",
    ["model"],
)
QUEUE_DEPTH = Gauge(
    PREFIX + "queue_depth",
    "Images waiting in the model's queue.",
    ["model"],
)
IMAGES = Counter(
    PREFIX + "images",
    "Images classified, by network kind.",
    ["model", "network"],
)
DROPPED = Counter(
    PREFIX + "dropped_requests",
    "Requests dropped before they ran, by reason (disconnect, deadline, overload).",
    ["model", "reason"],
)
MODEL_LOAD = Gauge(
    PREFIX + "model_load_seconds",
    "Seconds it took to load and warm up the model.",
    ["model", "version"],
)
MODEL_INFO = Gauge(
    PREFIX + "model_info",
    "Loaded models; the value is 1, the labels carry the facts.",
    ["model", "version", "provider"],
)
SUBNETWORK_GRAPHS = Gauge(
    PREFIX + "subnetwork_graphs",
    "Pruned sub-network graphs currently cached.",
    ["model"],
)
