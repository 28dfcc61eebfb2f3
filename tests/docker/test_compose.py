"""docker/compose.yaml, prometheus.yml and the Grafana dashboard.

Prometheus and Grafana images cannot be pulled here, so what they would read
is checked against the real service: every metric name the dashboard and the
scrape configuration use must be one the live `/metrics` exports.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import yaml

from tests.docker.conftest import DOCKER, run_tool, tool
from tests.helpers import CIFAR_SAMPLES, ServerProcess

COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "resnet-serve.json"
METRIC_NAME = re.compile(r"\bresnet_serve_[a-z0-9_]+")
# Series a metric family of each type exposes, by suffix (prometheus_client
# already names a counter's family `..._total`).
SUFFIXES = {
    "counter": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _exported_series(metrics_text: str) -> set[str]:
    """Series names the exposition declares, whether or not a sample exists yet."""
    series: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            series.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return series


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_compose_file_matches_the_compose_specification() -> None:
    result = run_tool(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(COMPOSE),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_profile_requests_an_nvidia_device() -> None:
    services = _compose()["services"]
    gpu = services["resnet-serve-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]

    assert gpu["profiles"] == ["gpu"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in services["resnet-serve"]


def test_compose_mounts_the_files_prometheus_and_grafana_read() -> None:
    services = _compose()["services"]
    mounts = [
        volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
    ]
    local = [mount for mount in mounts if mount.startswith("./")]

    assert local, "no configuration mounted"
    for mount in local:
        assert (DOCKER / mount).exists(), mount


def test_prometheus_scrapes_each_compose_service_on_its_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    services = _compose()["services"]

    assert job["metrics_path"] == "/metrics"
    for name in ("resnet-serve", "resnet-serve-gpu"):
        container_port = services[name]["ports"][0].rsplit(":", 1)[1]
        assert f"{name}:{container_port}" in targets


def test_dashboard_covers_the_service_signals() -> None:
    used = {name for expr in _dashboard_expressions() for name in METRIC_NAME.findall(expr)}

    assert {
        "resnet_serve_requests_total",  # request rate, errors
        "resnet_serve_request_duration_seconds_bucket",  # latency percentiles
        "resnet_serve_batch_size_bucket",  # batch size distribution
        "resnet_serve_queue_depth",  # queue depth
        "resnet_serve_batch_failures_total",  # failed batches
    } <= used


def test_dashboard_and_scrape_metric_names_exist_in_live_metrics(
    server: ServerProcess,
) -> None:
    # One classification first, so the per-model series have samples too.
    sample = CIFAR_SAMPLES[0]
    httpx.post(
        f"{server.url}/v1/models/resnet20-cifar10/classify",
        files={"file": (sample.name, sample.read_bytes(), "image/png")},
        timeout=30,
    ).raise_for_status()
    answer = httpx.get(f"{server.url}/metrics", timeout=10)
    exported = _exported_series(answer.text)

    used = set(METRIC_NAME.findall(PROMETHEUS.read_text()))
    used |= {name for expr in _dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    assert answer.status_code == 200
    assert used, "no metric names found"
    assert used - exported == set()
    assert "resnet_serve_requests_total" in {
        line.split("{")[0] for line in answer.text.splitlines() if not line.startswith("#")
    }
