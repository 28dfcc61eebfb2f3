"""The loaded models and their batchers, and the path of one request through them."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.repository import is_valid_name, locate
from service import metrics
from service.batching.batcher import Batcher, BatchStats
from service.errors import (
    DeadlineExceededError,
    InvalidParameterError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    ServiceError,
)
from service.runtime.model import ModelRuntime, RemovedSet
from service.settings import Settings

logger = logging.getLogger(__name__)

# ASCII digits only: str.isdigit() and int() also take other scripts' digits,
# and isdigit() takes superscripts that int() then refuses.
_INDEX = re.compile(r"-?[0-9]+")


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
        self._index_by_name = {block["name"]: block["index"] for block in runtime.blocks}

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
        return frozenset(
            self._resolve_item(position, str(item).strip())
            for position, item in enumerate(items, start=1)
        )

    def _resolve_item(self, position: int, text: str) -> int:
        blocks = self.runtime.blocks
        last = len(blocks) - 1
        if not text:
            raise InvalidParameterError(
                f"remove: item {position} is empty; give block indices "
                f"0..{last} or names such as {blocks[0]['name']!r}"
            )

        if _INDEX.fullmatch(text):
            # Length first: CPython refuses int() of more than 4,300 digits, and
            # no index with ten significant digits is in range anyway.
            if len(text.lstrip("-0")) < 10 and 0 <= int(text) <= last:
                return int(text)
            raise InvalidParameterError(
                f"remove: block index {_shorten(text)} is out of range 0..{last} "
                f"for {self.name}"
            )

        if text in self._index_by_name:
            return self._index_by_name[text]
        raise InvalidParameterError(
            f"remove: unknown block {_shorten(text)!r} for {self.name}; valid: indices "
            f"0..{last} or names {blocks[0]['name']!r}..{blocks[-1]['name']!r}"
        )

    def describe_removed(self, removed: RemovedSet) -> list[dict[str, Any]]:
        return [
            {"index": i, "name": self.runtime.blocks[i]["name"]} for i in sorted(removed)
        ]

    async def infer(
        self, tensors: Sequence[np.ndarray], removed: RemovedSet, deadline: float
    ) -> list[RowResult]:
        """Queue the tensors, wait for all of them, return per-image results.

        A request still queued at its `deadline` (monotonic seconds) is taken
        out of the queue and answered with a timeout; once its batch runs, it
        runs to the end. If the caller is cancelled (the client went away),
        its queued items are taken out too, so they never run.

        Raises:
            OverloadedError: the model's queue cannot take these images.
            DeadlineExceededError: the deadline passed while they were queued.
            InferenceFailedError: ONNX Runtime failed on their batch.
        """
        try:
            futures = self.batcher.submit(tensors, removed, deadline)
        except OverloadedError:
            metrics.DROPPED.labels(self.name, "overload").inc()
            raise
        self.runtime.subnetworks.count_request(removed)
        try:
            await self._wait(futures, deadline)
        except asyncio.CancelledError:
            self._abandon(futures, reason="disconnect")
            raise
        except ServiceError:
            self._abandon(futures)
            raise
        return [future.result() for future in futures]

    async def _wait(self, futures: list[asyncio.Future[Any]], deadline: float) -> None:
        """Return when all are done; raise the first failure or the expired deadline."""
        timeout_s = max(0.0, deadline - time.monotonic())
        _, pending = await asyncio.wait(
            futures, timeout=timeout_s, return_when=asyncio.FIRST_EXCEPTION
        )
        self._raise_first_error(futures)
        if not pending:
            return
        if self.batcher.withdraw(list(pending)):
            metrics.DROPPED.labels(self.name, "deadline").inc()
            raise DeadlineExceededError(
                f"the request's deadline passed while it was queued for {self.name}"
            )
        # What is left is in a running batch: it finishes, deadline or not.
        await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        self._raise_first_error(futures)

    def _raise_first_error(self, futures: list[asyncio.Future[Any]]) -> None:
        # Every error is retrieved, so that asyncio does not log the others as lost.
        errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
        first = next((error for error in errors if error is not None), None)
        if first is None:
            return
        if isinstance(first, DeadlineExceededError):
            metrics.DROPPED.labels(self.name, "deadline").inc()
        raise first

    def _abandon(self, futures: list[asyncio.Future[Any]], reason: str | None = None) -> None:
        """Drop what is still queued and stop waiting for the rest."""
        withdrawn = self.batcher.withdraw(futures)
        for future in futures:
            future.cancel()
        if withdrawn and reason is not None:
            metrics.DROPPED.labels(self.name, reason).inc()


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

    def reject_queued(self, message: str) -> None:
        """Answer every queued request of every model with 503 `message`."""
        for model in self.all():
            model.batcher.reject_queued(message)

    async def close(self) -> None:
        for model in self.all():
            await model.batcher.stop()
            model.runtime.close()


def _shorten(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters, so that an error never echoes a huge item."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

