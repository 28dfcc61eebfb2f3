"""docker/k8s/: schema validation offline, CRD fields, and the facts the pods rely on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.settings import Settings
from tests.docker import crd_fields
from tests.docker.conftest import documents, env_of, load_manifests, run_tool, tool
from tests.helpers import ServerProcess

KUBERNETES_VERSION = "1.30.0"
# API groups whose schemas ship with Kubernetes (and with kubernetes-validate).
CORE_GROUPS = {"", "apps", "autoscaling", "policy", "batch", "networking.k8s.io"}


def _group(doc: dict[str, Any]) -> str:
    api_version: str = doc["apiVersion"]
    return api_version.rpartition("/")[0]


def _core_files() -> list[Path]:
    return [
        path
        for path, docs in load_manifests().items()
        if all(_group(doc) in CORE_GROUPS for doc in docs)
    ]


def _validate(path: Path) -> str:
    result = run_tool(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        KUBERNETES_VERSION,
        str(path),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("path", _core_files(), ids=lambda path: path.name)
def test_core_manifest_passes_strict_kubernetes_schema(path: Path) -> None:
    output = _validate(path)
    # Without a schema the tool only warns and exits 0: that must not pass.
    assert "couldn't find schema" not in output.lower(), output
    assert "passed" in output, output


def test_custom_resources_are_the_only_files_left_to_crd_checks() -> None:
    custom = {
        doc["kind"]
        for docs in load_manifests().values()
        for doc in docs
        if _group(doc) not in CORE_GROUPS
    }
    assert custom == {"ServiceMonitor", "InferenceService"}


def _unknown_fields(
    node: Any,
    allowed: dict[str, set[str]],
    path: str = "",
) -> list[str]:
    """Keys at the paths listed in `allowed` that the CRD does not define."""
    unknown: list[str] = []
    if isinstance(node, list):
        for item in node:
            unknown += _unknown_fields(item, allowed, f"{path}[]")
        return unknown
    if not isinstance(node, dict) or path not in allowed:
        return unknown
    for key, value in node.items():
        if key not in allowed[path]:
            unknown.append(f"{path}.{key}".lstrip("."))
        unknown += _unknown_fields(value, allowed, f"{path}.{key}".lstrip("."))
    return unknown


def test_service_monitor_uses_fields_its_crd_defines() -> None:
    (monitor,) = documents("ServiceMonitor")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _unknown_fields(monitor, crd_fields.SERVICE_MONITOR_FIELDS) == []
    assert crd_fields.SERVICE_MONITOR_REQUIRED["spec"] <= monitor["spec"].keys()
    for endpoint in monitor["spec"]["endpoints"]:
        for key in ("interval", "scrapeTimeout"):
            assert re.match(crd_fields.PROMETHEUS_DURATION, endpoint.get(key, "0"))


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    (monitor,) = documents("ServiceMonitor")
    (service,) = documents("Service")

    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= port_names
    assert all(endpoint["path"] == "/metrics" for endpoint in monitor["spec"]["endpoints"])


def test_inference_service_is_a_custom_predictor_speaking_v2(tmp_path: Path) -> None:
    (isvc,) = documents("InferenceService")
    predictor = isvc["spec"]["predictor"]

    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert _unknown_fields(isvc, crd_fields.INFERENCE_SERVICE_FIELDS) == []
    assert predictor["scaleMetric"] in crd_fields.SCALE_METRICS
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
    container = predictor["containers"][0]
    assert container["name"] == crd_fields.PREDICTOR_CONTAINER
    assert env_of(container)["PROTOCOL"] == "v2"
    assert env_of(container)["PROTOCOL"] in crd_fields.CUSTOM_PROTOCOLS

    # The predictor inlines a core PodSpec: its containers get the core schema.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {"containers": predictor["containers"]},
    }
    pod_file = tmp_path / "predictor-pod.yaml"
    pod_file.write_text(yaml.safe_dump(pod))
    assert "passed" in _validate(pod_file)


def _pod_specs() -> list[dict[str, Any]]:
    return [deployment["spec"]["template"]["spec"] for deployment in documents("Deployment")]


def _prestop_sleep_s(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    return float(command[1]) if command and command[0] == "sleep" else 0.0


def test_termination_grace_covers_prestop_drain_and_shutdown() -> None:
    defaults = Settings.model_fields
    for pod in _pod_specs():
        for container in pod["containers"]:
            env = env_of(container)
            drain_s = float(
                env.get("RESNET_SERVE_DRAIN_DELAY_S", defaults["drain_delay_s"].default)
            )
            grace_s = float(
                env.get("RESNET_SERVE_SHUTDOWN_GRACE_S", defaults["shutdown_grace_s"].default)
            )
            needed_s = _prestop_sleep_s(container) + drain_s + grace_s
            assert _prestop_sleep_s(container) > 0
            assert pod["terminationGracePeriodSeconds"] >= needed_s


def test_gpu_deployment_requests_and_limits_a_gpu() -> None:
    (gpu,) = [doc for doc in documents("Deployment") if doc["metadata"]["name"].endswith("gpu")]
    resources = gpu["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources["limits"]["nvidia.com/gpu"] >= 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]


def test_every_deployment_sets_requests_limits_and_non_root() -> None:
    for pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert "memory" in container["resources"]["limits"]


def test_hpa_and_service_point_at_the_deployment() -> None:
    (hpa,) = documents("HorizontalPodAutoscaler")
    (service,) = documents("Service")
    deployments = {doc["metadata"]["name"]: doc for doc in documents("Deployment")}

    target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
    pod_labels = target["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert hpa["spec"]["minReplicas"] <= target["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def _probe_paths() -> set[str]:
    containers = [c for pod in _pod_specs() for c in pod["containers"]]
    containers += documents("InferenceService")[0]["spec"]["predictor"]["containers"]
    return {
        container[probe]["httpGet"]["path"]
        for container in containers
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        if probe in container
    }


def test_probe_paths_answer_200_on_a_ready_server(server: ServerProcess) -> None:
    paths = _probe_paths()

    assert {"/health/ready", "/health/live"} <= paths
    for path in sorted(paths):
        assert httpx.get(server.url + path, timeout=5).status_code == 200, path
