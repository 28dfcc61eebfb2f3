"""`Batcher` on its own, on a real event loop with a real (tiny) batch runner:
when batches form, what a full queue, a failing batch, a withdrawal and a stop do."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from service.batching.batcher import Batcher, BatchStats
from service.errors import DeadlineExceededError, InferenceFailedError, OverloadedError
from service.settings import BatchingConfig

LONG_DELAY_MS = 10_000  # longer than any test: a batch forms only by filling up
SENTINEL = -1.0  # no test uses it as an ordinary value


class Doubler:
    """Answers each row with twice its value; fails the batch holding `SENTINEL`."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self._lock = threading.Lock()  # called on the batcher's worker thread

    def __call__(self, inputs: np.ndarray, keys: Sequence[Any]) -> list[float]:
        values = [float(row[0]) for row in inputs]
        with self._lock:
            self.batches.append(values)
        if SENTINEL in values:
            raise RuntimeError(f"sentinel {SENTINEL} in the batch")
        return [2 * value for value in values]


BatcherFactory = Callable[..., Batcher]


@pytest.fixture
async def make_batcher() -> AsyncIterator[BatcherFactory]:
    """Builds batchers on this test's loop and stops them all at the end."""
    made: list[Batcher] = []

    def make(runner: Doubler, *, max_batch_size: int = 4,
             max_queue_delay_ms: float = LONG_DELAY_MS, max_queue_size: int = 64,
             start: bool = True, **callbacks: Any) -> Batcher:
        config = BatchingConfig(max_batch_size=max_batch_size,
                                max_queue_delay_ms=max_queue_delay_ms,
                                max_queue_size=max_queue_size)
        batcher = Batcher("test", runner, config, **callbacks)
        if start:
            batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        await batcher.stop()


def submit(batcher: Batcher, *values: float, deadline_s: float = 60.0,
           ) -> list[asyncio.Future[Any]]:
    """One request: a [1]-shaped tensor per value."""
    tensors = [np.full(1, value, dtype=np.float32) for value in values]
    return batcher.submit(tensors, None, time.monotonic() + deadline_s)


async def settle(futures: Sequence[asyncio.Future[Any]], timeout_s: float = 5.0) -> list[Any]:
    """Results and exceptions of `futures`, in order."""
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout_s)


@pytest.mark.parametrize("max_batch_size", [1, 3, 8])
async def test_full_batches_run_without_waiting_for_the_delay(
    make_batcher: BatcherFactory, max_batch_size: int
) -> None:
    runner = Doubler()
    batcher = make_batcher(runner, max_batch_size=max_batch_size)
    values = [float(i) for i in range(2 * max_batch_size)]

    started = time.monotonic()
    results = await settle([f for value in values for f in submit(batcher, value)])

    assert time.monotonic() - started < LONG_DELAY_MS / 1000 / 2
    assert results == [2 * value for value in values]
    assert runner.batches == [values[:max_batch_size], values[max_batch_size:]]


async def test_partial_batch_runs_once_the_oldest_item_has_waited_the_delay(
    make_batcher: BatcherFactory,
) -> None:
    delay_s, second_after_s = 0.4, 0.25
    runner, stats = Doubler(), []
    batcher = make_batcher(runner, max_batch_size=8, max_queue_delay_ms=delay_s * 1000,
                           on_batch=stats.append)

    started = time.monotonic()
    first = submit(batcher, 1.0)
    await asyncio.sleep(second_after_s)
    second = submit(batcher, 2.0)
    results = await settle(first + second)
    elapsed_s = time.monotonic() - started

    assert results == [2.0, 4.0]
    assert runner.batches == [[1.0, 2.0]], "the second item did not join the first's batch"
    # Timed from the oldest item: the second's own delay would end at 0.65 s.
    assert delay_s <= elapsed_s < second_after_s + delay_s
    (batch,) = stats
    assert isinstance(batch, BatchStats) and batch.size == 2 and not batch.failed
    assert batch.queue_wait_s[0] >= delay_s > batch.queue_wait_s[1]


async def test_full_queue_raises_overloaded_and_accepts_nothing(
    make_batcher: BatcherFactory,
) -> None:
    runner, depths = Doubler(), []
    batcher = make_batcher(runner, max_batch_size=4, max_queue_delay_ms=20, max_queue_size=4,
                           start=False, on_depth=depths.append)
    accepted = submit(batcher, 0.0, 1.0, 2.0)

    with pytest.raises(OverloadedError, match="overloaded: its queue holds 3 of 4"):
        submit(batcher, 10.0, 11.0)

    assert batcher.depth == 3 and depths[-1] == 3
    accepted += submit(batcher, 3.0)
    batcher.start()
    assert await settle(accepted) == [0.0, 2.0, 4.0, 6.0]
    assert runner.batches == [[0.0, 1.0, 2.0, 3.0]]


async def test_failing_runner_fails_only_its_own_batch(make_batcher: BatcherFactory) -> None:
    runner, stats = Doubler(), []
    batcher = make_batcher(runner, max_batch_size=2, on_batch=stats.append)

    futures = [f for value in (SENTINEL, 1.0, 2.0, 3.0) for f in submit(batcher, value)]
    results = await settle(futures)

    assert runner.batches == [[SENTINEL, 1.0], [2.0, 3.0]]
    for error in results[:2]:
        assert isinstance(error, InferenceFailedError)
        assert f"sentinel {SENTINEL}" in error.message
    assert results[2:] == [4.0, 6.0]
    assert [batch.failed for batch in stats] == [True, False]
    assert await settle(submit(batcher, 4.0, 5.0)) == [8.0, 10.0]


async def test_withdrawn_items_leave_the_queue_and_never_run(
    make_batcher: BatcherFactory,
) -> None:
    runner = Doubler()
    batcher = make_batcher(runner, max_queue_delay_ms=20, start=False)
    kept = submit(batcher, 1.0)
    gone = submit(batcher, 2.0, 3.0)
    kept += submit(batcher, 4.0)

    assert batcher.withdraw(gone) == 2
    assert batcher.withdraw(gone) == 0, "withdrawn twice"
    assert batcher.depth == 2
    assert all(future.cancelled() for future in gone)

    batcher.start()
    assert await settle(kept) == [2.0, 8.0]
    assert runner.batches == [[1.0, 4.0]]


async def test_item_past_its_deadline_is_answered_and_never_runs(
    make_batcher: BatcherFactory,
) -> None:
    runner = Doubler()
    batcher = make_batcher(runner, max_queue_delay_ms=100)
    late = submit(batcher, 1.0, deadline_s=0.01)
    on_time = submit(batcher, 2.0)

    expired, result = await settle(late + on_time)

    assert isinstance(expired, DeadlineExceededError)
    assert result == 4.0
    assert runner.batches == [[2.0]]


async def test_stop_rejects_queued_items(make_batcher: BatcherFactory) -> None:
    runner = Doubler()
    batcher = make_batcher(runner)
    queued = submit(batcher, 1.0, 2.0)
    await asyncio.sleep(0.05)  # the loop now waits for a batch that never fills

    await batcher.stop()

    for error in await settle(queued):
        assert isinstance(error, OverloadedError)
        assert "shutting down" in error.message
    assert batcher.depth == 0 and not batcher.busy
    assert runner.batches == []
