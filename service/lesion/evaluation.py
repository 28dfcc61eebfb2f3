"""Predictions and top-1 error of a model, whole or with blocks removed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from models.repository import locate
from service.runtime.model import ModelRuntime
from service.runtime.session import create_session
from service.settings import available_cpus

EVAL_BATCH = 256


def load_runtime(repository: Path, name: str, version: int | None = None) -> ModelRuntime:
    """The model as the service loads it (same session options, same warm-up)."""
    files = locate(repository, name, version)
    return ModelRuntime(files, ["CPUExecutionProvider"], available_cpus(), cache_size=0)


def predict(runtime: ModelRuntime, inputs: np.ndarray, removed: Iterable[int] = (),
            batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Top-1 class of every input, with the blocks in `removed` taken out.

    The full network runs on the service's masked graph. A non-empty set runs
    on the pruned graph the service builds for repeated sets, so a lesion
    study pays only for the blocks that are left.
    """
    removed = frozenset(removed)
    if removed:
        graph = runtime.pruned_graph(removed).SerializeToString()
        session = create_session(graph, ["CPUExecutionProvider"], available_cpus(),
                                 f"{runtime.name} without {len(removed)} blocks")

    predictions = np.empty(len(inputs), dtype=np.int64)
    for start in range(0, len(inputs), batch_size):
        batch = np.ascontiguousarray(inputs[start : start + batch_size])
        if removed:
            logits = session.run(["logits"], {"input": batch})[0]
        else:
            logits = runtime.session.run(["logits"], runtime.feeds(batch, [removed] * len(batch)))[0]
        predictions[start : start + len(batch)] = logits.argmax(axis=1)
    return predictions


def top1_error(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of wrong top-1 predictions, in [0, 1]."""
    return float(np.mean(predictions != labels))
