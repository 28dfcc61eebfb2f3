"""Fields that the published CRDs define, for the custom resources in docker/k8s/.

kubernetes-validate carries schemas for the core kinds only, so the
ServiceMonitor and the InferenceService are checked against these field sets,
read from the CRDs and API types at:

- ServiceMonitor: prometheus-operator/prometheus-operator,
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
  (operator 0.84.1, commit 01b1a0ea3113af46d69ae3d2ee717bd10b2de1d1).
- InferenceService: kserve/kserve, pkg/apis/serving/v1beta1/predictor.go,
  component.go and predictor_custom.go
  (commit 0217bdabaaa250485b336805da1aed04960dc758); the predictor inlines a
  core PodSpec, whose containers the Kubernetes schema checks.

A set maps a path to the keys allowed there; `[]` in a path stands for every
item of a list.
"""

from __future__ import annotations


def _names(text: str) -> set[str]:
    """Field names written one after another, as the CRD lists them."""
    return set(text.split())


SERVICE_MONITOR_FIELDS: dict[str, set[str]] = {
    "": {"apiVersion", "kind", "metadata", "spec"},
    "spec": _names(
        """
        attachMetadata bodySizeLimit convertClassicHistogramsToNHCB endpoints
        fallbackScrapeProtocol jobLabel keepDroppedTargets labelLimit
        labelNameLengthLimit labelValueLengthLimit namespaceSelector
        nativeHistogramBucketLimit nativeHistogramMinBucketFactor
        podTargetLabels sampleLimit scrapeClass scrapeClassicHistograms
        scrapeProtocols selector selectorMechanism targetLabels targetLimit
        """
    ),
    "spec.selector": {"matchExpressions", "matchLabels"},
    "spec.namespaceSelector": {"any", "matchNames"},
    "spec.endpoints[]": _names(
        """
        authorization basicAuth bearerTokenFile bearerTokenSecret enableHttp2
        filterRunning followRedirects honorLabels honorTimestamps interval
        metricRelabelings noProxy oauth2 params path port proxyConnectHeader
        proxyFromEnvironment proxyUrl relabelings scheme scrapeTimeout
        targetPort tlsConfig trackTimestampsStaleness
        """
    ),
}
SERVICE_MONITOR_REQUIRED = {"spec": {"endpoints", "selector"}}
# The CRD's pattern for `interval` and `scrapeTimeout` (Prometheus durations).
PROMETHEUS_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    r"(([0-9]+)s)?(([0-9]+)ms)?)$"
)

# PredictorSpec: the framework specs, `model`, storage and worker specs, the
# inlined PodSpec and the inlined ComponentExtensionSpec.
_POD_SPEC = _names(
    """
    activeDeadlineSeconds affinity automountServiceAccountToken containers
    dnsConfig dnsPolicy enableServiceLinks ephemeralContainers hostAliases
    hostIPC hostNetwork hostPID hostUsers hostname imagePullSecrets
    initContainers nodeName nodeSelector os overhead preemptionPolicy
    priority priorityClassName readinessGates resourceClaims restartPolicy
    runtimeClassName schedulerName schedulingGates securityContext
    serviceAccount serviceAccountName setHostnameAsFQDN
    shareProcessNamespace subdomain terminationGracePeriodSeconds
    tolerations topologySpreadConstraints volumes
    """
)
_COMPONENT_EXTENSION = _names(
    """
    minReplicas maxReplicas scaleTarget scaleMetric containerConcurrency
    timeout canaryTrafficPercent logger batcher labels annotations
    deploymentStrategy
    """
)
_FRAMEWORKS = _names(
    """
    sklearn xgboost tensorflow pytorch triton onnx huggingface pmml
    lightgbm paddle model storageUris workerSpec
    """
)
INFERENCE_SERVICE_FIELDS: dict[str, set[str]] = {
    "": {"apiVersion", "kind", "metadata", "spec"},
    "spec": {"predictor", "transformer", "explainer"},
    "spec.predictor": _FRAMEWORKS | _POD_SPEC | _COMPONENT_EXTENSION,
}
SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}
# The container KServe treats as the predictor, and the protocols a custom
# predictor may declare through its PROTOCOL variable.
PREDICTOR_CONTAINER = "kserve-container"
CUSTOM_PROTOCOLS = {"v1", "v2"}
