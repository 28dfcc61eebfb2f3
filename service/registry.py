"""The loaded models and their batchers, and the path of one request through them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.repository import is_valid_name, locate
from service import metrics
from service.batching.batcher import Batcher, BatchStats
from service.errors import (
    InvalidParameterError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from service.runtime.model import ModelRuntime, RemovedSet
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowResult:
    logits: np.ndarray
    probabilities: np.ndarray
    graph: str


class LoadedModel:
    """A runtime and its batcher."""

    def __init__(self, runtime: ModelRuntime, batcher: Batcher) -> None:
        self.runtime = runtime
        self.batcher = batcher

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> int:
        return self.runtime.version

    def resolve_blocks(self, items: Sequence[str | int]) -> RemovedSet:
        """Block indices from indices and/or names; duplicates count once.

        Raises:
            InvalidParameterError: an item is empty, unknown or out of range.
        """
        blocks = self.runtime.blocks
        by_name = {block["name"]: block["index"] for block in blocks}
        last = len(blocks) - 1
        chosen = set()
        for position, item in enumerate(items):
            text = str(item).strip()
            if not text:
                raise InvalidParameterError(
                    f"remove: item {position + 1} is empty; give block indices "
                    f"0..{last} or names such as {blocks[0]['name']!r}"
                )
            if text.lstrip("-").isdigit():
                index = int(text)
                if not 0 <= index <= last:
                    raise InvalidParameterError(
                        f"remove: block index {text} is out of range 0..{last} "
                        f"for {self.name}"
                    )
                chosen.add(index)
            elif text in by_name:
                chosen.add(by_name[text])
            else:
                raise InvalidParameterError(
                    f"remove: unknown block {text!r} for {self.name}; valid: indices "
                    f"0..{last} or names {blocks[0]['name']!r}..{blocks[-1]['name']!r}"
                )
        return frozenset(chosen)

    def describe_removed(self, removed: RemovedSet) -> list[dict[str, Any]]:
        return [
            {"index": i, "name": self.runtime.blocks[i]["name"]} for i in sorted(removed)
        ]

    async def infer(
        self, tensors: Sequence[np.ndarray], removed: RemovedSet, deadline: float
    ) -> list[RowResult]:
        """Queue the tensors, wait for all of them, return per-image results.

        If the caller is cancelled (client gone), the queued items are
        cancelled too, and the batcher skips them.
        """
        futures = self.batcher.submit(tensors, removed, deadline)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            metrics.DROPPED.labels(self.name, "disconnect").inc()
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)


class ModelRegistry:
    """Loads the configured models; finds them by name and version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self.ready = False

    def configured_names(self) -> set[str]:
        return {ref.name for ref in self.settings.model_refs()}

    async def load_all(self) -> None:
        """Load, warm up and start a batcher for every configured model."""
        for ref in self.settings.model_refs():
            files = locate(self.settings.model_repository, ref.name, ref.version)
            runtime = await asyncio.to_thread(
                ModelRuntime, files, self.settings.providers, self.settings.threads,
                self.settings.subnetwork_cache_size, self.settings.subnetwork_prune_after,
            )
            self._register(runtime)
        self.ready = True

    def _register(self, runtime: ModelRuntime) -> None:
        name, version = runtime.name, runtime.version
        config = self.settings.batching_for(name)
        batcher = Batcher(
            name, _row_runner(runtime), config,
            on_batch=lambda stats: _record_batch(name, stats),
            on_depth=metrics.QUEUE_DEPTH.labels(name).set,
        )
        batcher.start()
        self._models.setdefault(name, {})[version] = LoadedModel(runtime, batcher)

        metrics.MODEL_LOAD.labels(name, str(version)).set(runtime.load_seconds)
        metrics.MODEL_INFO.labels(name, str(version), runtime.provider).set(1)
        metrics.QUEUE_DEPTH.labels(name).set(0)
        if not runtime.pretrained:
            logger.warning("%s:%s has random weights (pretrained: false): its "
                           "predictions mean nothing", name, version)
        logger.info(
            "loaded %s:%s on %s in %.2f s (max batch %d, delay %.1f ms, queue %d)",
            name, version, runtime.provider, runtime.load_seconds,
            config.max_batch_size, config.max_queue_delay_ms, config.max_queue_size,
        )

    def get(self, name: str, version: str | int | None = None) -> LoadedModel:
        """The model at `version`, or its highest loaded version.

        Raises:
            ModelNotFoundError: no such model or version is loaded.
            ModelNotReadyError: the service is still loading models.
        """
        versions = self._models.get(name) if is_valid_name(name) else None
        if not versions:
            if not self.ready and name in self.configured_names():
                raise ModelNotReadyError(f"model {name!r} is still loading")
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        if version is None:
            return versions[max(versions)]
        text = str(version)
        if not text.isdigit() or int(text) not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no loaded version {text!r}; loaded: "
                f"{sorted(versions)}"
            )
        return versions[int(text)]

    def all(self) -> list[LoadedModel]:
        return [model for versions in self._models.values() for model in versions.values()]

    def busy(self) -> bool:
        return any(model.batcher.busy for model in self.all())

    async def close(self) -> None:
        for model in self.all():
            await model.batcher.stop()
            model.runtime.close()


def _row_runner(runtime: ModelRuntime) -> Any:
    def run(inputs: np.ndarray, keys: Sequence[RemovedSet]) -> list[RowResult]:
        output = runtime.run_batch(inputs, keys)
        metrics.SUBNETWORK_GRAPHS.labels(runtime.name).set(len(runtime.subnetworks))
        return [
            RowResult(output.logits[i], output.probabilities[i], output.graphs[i])
            for i in range(len(inputs))
        ]

    return run


def _record_batch(name: str, stats: BatchStats) -> None:
    metrics.BATCH_SIZE.labels(name).observe(stats.size)
    metrics.INFERENCE_DURATION.labels(name).observe(stats.inference_s)
    wait = metrics.QUEUE_WAIT.labels(name)
    for seconds in stats.queue_wait_s:
        wait.observe(seconds)
    if stats.failed:
        metrics.BATCH_FAILURES.labels(name).inc()

