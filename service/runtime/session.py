"""ONNX Runtime sessions: choose providers, load, warm up, run one batch."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
_PROVIDER_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
#: Missing providers already warned about in this process.
_warned_missing: set[str] = set()
_warned_lock = threading.Lock()


def normalise_provider(name: str) -> str:
    """Accept `cuda`, `CUDA` or `CUDAExecutionProvider` alike."""
    return _PROVIDER_ALIASES.get(name.strip().lower(), name.strip())


def usable_providers(requested: list[str]) -> list[str]:
    """The requested providers this onnxruntime build has, CPU always last."""
    available = set(ort.get_available_providers())
    names = list(dict.fromkeys(map(normalise_provider, requested)))
    missing = [name for name in names if name not in available]
    chosen = [name for name in names if name in available and name != CPU]
    chosen.append(CPU)
    for name in missing:
        _log_missing_provider(name, available, chosen[0])
    return chosen


def _log_missing_provider(name: str, available: set[str], fallback: str) -> None:
    """Warn once per process and provider; sessions are created again for every
    pruned sub-network graph, and the cause does not change between them."""
    with _warned_lock:  # sessions are created in worker threads
        first = name not in _warned_missing
        _warned_missing.add(name)
    level = logging.WARNING if first else logging.DEBUG
    logger.log(
        level,
        "execution provider %s requested but not available in this onnxruntime "
        "build (available: %s); falling back to %s",
        name, ", ".join(sorted(available)), fallback,
    )


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def create_session(
    model: str | bytes, providers: list[str], threads: int, label: str
) -> ort.InferenceSession:
    """An InferenceSession on the first provider that really loads.

    A provider can be compiled in and still fail at load (missing CUDA
    libraries, no device); ONNX Runtime then either raises or silently drops
    it. Both cases end on the CPU provider with a warning naming the cause.
    """
    chosen = usable_providers(providers)
    options = session_options(threads)
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises several unrelated types
        if chosen == [CPU]:
            raise
        logger.warning(
            "%s: could not create a session with %s (%s); falling back to CPU",
            label, ", ".join(chosen), exc,
        )
        return ort.InferenceSession(model, sess_options=options, providers=[CPU])

    active = session.get_providers()
    if chosen[0] != CPU and active[0] != chosen[0]:
        logger.warning(
            "%s: %s did not load (see onnxruntime's log); running on %s",
            label, chosen[0], active[0],
        )
    return session


def warm_up(session: ort.InferenceSession, feeds: dict[str, Any], runs: int = 3) -> None:
    """Run a few batches so that first requests do not pay for lazy set-up."""
    for _ in range(runs):
        session.run(None, feeds)


def active_provider(session: ort.InferenceSession) -> str:
    return str(session.get_providers()[0])


def zeros_for(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Zero inputs of the right shapes (dynamic axes other than batch set to 1)."""
    feeds = {}
    for arg in session.get_inputs():
        shape = [batch if i == 0 else (d if isinstance(d, int) else 1)
                 for i, d in enumerate(arg.shape)]
        dtype = np.float32 if "float" in arg.type else np.int64
        feeds[arg.name] = np.zeros(shape, dtype=dtype)
    return feeds
