"""Dynamic batching: one bounded queue and one worker loop per model.

Requests put one item per image on the queue and wait for all of them. The
loop waits for a first item, then for the batch to fill or for the oldest item
to have waited `max_queue_delay_ms`, drops items whose client is gone or whose
deadline passed, and runs the rest in one call on a worker thread. Running off
the event loop keeps HTTP responsive; one thread per model keeps a model's
batches in order and leaves the cores to ONNX Runtime's own threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import (
    DeadlineExceededError,
    InferenceFailedError,
    OverloadedError,
    PayloadTooLargeError,
)
from service.settings import BatchingConfig

logger = logging.getLogger(__name__)

#: Runs one batch: (inputs [B, ...], per-row keys) -> per-row results.
BatchRunner = Callable[[np.ndarray, Sequence[Any]], Sequence[Any]]


@dataclass
class BatchStats:
    """What the loop reports for each batch it ran (fed to the metrics)."""

    size: int
    queue_wait_s: list[float]
    inference_s: float
    failed: bool


@dataclass
class BatchTotals:
    """Running totals of the batches run, overall and by batch size.

    Kept in plain numbers next to the batcher so that readers on the request
    path (Triton's statistics) never have to collect the Prometheus registry,
    which costs about a millisecond a time.
    """

    images: int = 0
    batches: int = 0
    seconds: float = 0.0
    #: batch size -> [batches, seconds]
    by_size: dict[int, list[float]] = field(default_factory=dict)

    def add(self, size: int, seconds: float) -> None:
        self.images += size
        self.batches += 1
        self.seconds += seconds
        entry = self.by_size.setdefault(size, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Item:
    tensor: np.ndarray
    key: Any
    deadline: float
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """The queue and worker loop of one model."""

    def __init__(
        self,
        name: str,
        runner: BatchRunner,
        config: BatchingConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._runner = runner
        self._on_batch = on_batch or (lambda stats: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")
        self._task: asyncio.Task[None] | None = None
        self._running = 0
        self.totals = BatchTotals()

    @property
    def depth(self) -> int:
        """Images waiting in the queue (not counting the batch being run)."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._running > 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{self.name}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.reject_queued("the service is shutting down")
        self._executor.shutdown(wait=True)

    def reject_queued(self, message: str) -> None:
        """Answer every queued item with OverloadedError(`message`); running ones go on."""
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(OverloadedError(message))
        self._queue.clear()
        self._on_depth(0)

    def submit(
        self, tensors: Sequence[np.ndarray], key: Any, deadline: float
    ) -> list[asyncio.Future[Any]]:
        """Queue one item per tensor; all or none are accepted.

        Raises:
            PayloadTooLargeError: more tensors than the queue can ever hold,
                which no retry would change.
            OverloadedError: the queue cannot take all of them now.
        """
        if len(tensors) > self.config.max_queue_size:
            raise PayloadTooLargeError(
                f"{len(tensors)} images in one request; the queue of model {self.name!r} "
                f"holds at most {self.config.max_queue_size}"
            )
        if len(self._queue) + len(tensors) > self.config.max_queue_size:
            raise OverloadedError(
                f"model {self.name!r} is overloaded: its queue holds "
                f"{len(self._queue)} of {self.config.max_queue_size} images"
            )
        loop = asyncio.get_running_loop()
        futures = []
        for tensor in tensors:
            item = _Item(tensor, key, deadline, loop.create_future())
            self._queue.append(item)
            futures.append(item.future)
        self._on_depth(len(self._queue))
        self._wakeup.set()
        return futures

    def withdraw(self, futures: Sequence[asyncio.Future[Any]]) -> int:
        """Take back the items of `futures` that are still queued, cancelling them.

        Items already taken into a batch are left to finish. Returns how many
        items were withdrawn; 0 means none of them was still waiting.
        """
        wanted = set(futures)
        kept: deque[_Item] = deque()
        withdrawn = 0
        for item in self._queue:
            if item.future in wanted:
                item.future.cancel()
                withdrawn += 1
            else:
                kept.append(item)
        if withdrawn:
            self._queue = kept
            self._on_depth(len(kept))
        return withdrawn

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run(batch)

    async def _next_batch(self) -> list[_Item]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()

        # Wait for a full batch or for the oldest item's delay to run out.
        delay_s = self.config.max_queue_delay_ms / 1000
        while len(self._queue) < self.config.max_batch_size:
            remaining = self._queue[0].enqueued + delay_s - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            if not self._queue:
                return []

        return self._take(self.config.max_batch_size)

    def _take(self, limit: int) -> list[_Item]:
        batch: list[_Item] = []
        now = time.monotonic()
        while self._queue and len(batch) < limit:
            item = self._queue.popleft()
            if item.future.done():  # cancelled: the client went away
                continue
            if now > item.deadline:
                item.future.set_exception(
                    DeadlineExceededError("the request's deadline passed while it was queued")
                )
                continue
            batch.append(item)
        self._on_depth(len(self._queue))
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        keys = [item.key for item in batch]
        loop = asyncio.get_running_loop()
        self._running = len(batch)
        failed = False
        try:
            inputs = np.stack([item.tensor for item in batch])
            results = await loop.run_in_executor(self._executor, self._runner, inputs, keys)
        except Exception as exc:
            failed = True
            logger.error("batch of %d for %s failed: %s", len(batch), self.name, exc,
                         exc_info=exc)
            error = InferenceFailedError(
                f"inference failed in ONNX Runtime for this request's batch: {exc}"
            )
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            self._running = 0

        inference_s = time.monotonic() - started
        if not failed:
            self.totals.add(len(batch), inference_s)
        self._on_batch(BatchStats(
            size=len(batch),
            queue_wait_s=[started - item.enqueued for item in batch],
            inference_s=inference_s,
            failed=failed,
        ))
