"""The lesion study: top-1 error with blocks removed or reordered (Veit et al. 2016).

`run_study` measures, on images decoded once, the error of the full network,
of the network without each single block, of the network without k random
blocks for a grid of k, and optionally of networks whose blocks were swapped
within their stage. Each distinct set of removed blocks (and each distinct
order) is evaluated once, so repeated draws cost nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.lesion.dataset import LabelledImages, ProgressCallback, load_folder
from service.lesion.evaluation import load_runtime, predict, top1_error
from service.lesion.reordering import BlockReorderer
from service.lesion.results import BlockLesion, LesionStudy, RemovalPoint, ReorderPoint
from service.lesion.sampling import (
    default_grid,
    default_swaps_grid,
    draw_orders,
    draw_removal_sets,
    kendall_tau,
    swappable_pairs,
)
from service.runtime.model import ModelRuntime, RemovedSet

logger = logging.getLogger(__name__)


class StudyConfigError(ValueError):
    """A setting of the study cannot work for the model at hand."""


@dataclass(frozen=True)
class StudyConfig:
    """What to measure. A grid left as None takes the model's default."""

    #: Numbers of blocks removed at once; default `sampling.default_grid`.
    grid: tuple[int, ...] | None = None
    #: Random sets drawn per k (and orders per swap count).
    draws: int = 5
    #: Seed of the generator every set and order is drawn from.
    seed: int = 0
    #: Also measure networks with blocks swapped within their stage.
    reorder: bool = False
    #: Swap counts; default `sampling.default_swaps_grid`.
    swaps_grid: tuple[int, ...] | None = None

    def check(self, num_blocks: int) -> None:
        """Raise StudyConfigError naming a setting that cannot work for this model."""
        if self.draws < 1:
            raise StudyConfigError(f"draws must be at least 1, got {self.draws}")
        bad = [k for k in self.grid or () if not 1 <= k <= num_blocks]
        if bad or self.grid == ():
            raise StudyConfigError(
                f"grid values must lie in 1..{num_blocks} (the model's blocks), got "
                f"{list(self.grid or ())}"
            )
        if any(swaps < 1 for swaps in self.swaps_grid or ()) or self.swaps_grid == ():
            raise StudyConfigError(f"swap counts must be at least 1, got {self.swaps_grid}")


@dataclass
class _Plan:
    """The draws of a study, made before anything runs so the total is known."""

    grid: list[int]
    sets: list[list[list[int]]]
    swaps_grid: list[int]
    orders: list[list[list[int]]]

    def distinct_sets(self, num_blocks: int) -> list[RemovedSet]:
        wanted: list[RemovedSet] = [frozenset()]
        wanted += [frozenset([index]) for index in range(num_blocks)]
        wanted += [frozenset(drawn) for per_k in self.sets for drawn in per_k]
        return list(dict.fromkeys(wanted))

    def distinct_orders(self) -> list[tuple[int, ...]]:
        # An order whose swaps cancel out is the full network, already evaluated.
        drawn = [tuple(order) for per_swaps in self.orders for order in per_swaps]
        return [order for order in dict.fromkeys(drawn) if list(order) != sorted(order)]


def run_study(
    runtime: ModelRuntime,
    images: LabelledImages,
    config: StudyConfig,
    progress: ProgressCallback | None = None,
) -> LesionStudy:
    """Measure the lesion study of `runtime` on `images`.

    Args:
        runtime: the model as the service loads it (`evaluation.load_runtime`).
        images: preprocessed inputs and their labels.
        config: what to measure; checked against the model first.
        progress: called with (evaluations done, evaluations in all) after
            each pass over the images.

    Raises:
        StudyConfigError: a setting of `config` does not fit the model.
    """
    config.check(runtime.num_blocks)
    reorderer = BlockReorderer(runtime) if config.reorder else None
    plan = _make_plan(runtime, config, reorderer)

    errors = _evaluate(runtime, images, plan, reorderer, progress)

    return LesionStudy(
        model=runtime.name,
        version=runtime.version,
        images=len(images.labels),
        classes=len(runtime.labels),
        seed=config.seed,
        draws=config.draws,
        grid=plan.grid,
        baseline_error=errors.of_set(()),
        blocks=[_block_lesion(block, errors.of_set([block["index"]])) for block in runtime.blocks],
        removal=[
            RemovalPoint(k, drawn, [errors.of_set(s) for s in drawn])
            for k, drawn in zip(plan.grid, plan.sets, strict=True)
        ],
        reordering=_reorder_points(plan, errors) if reorderer is not None else None,
        seconds=errors.seconds,
        predictions=errors.by_set,
    )


def study_folder(
    repository: Path,
    model: str,
    data: Path,
    config: StudyConfig,
    *,
    version: int | None = None,
    limit: int | None = None,
    decode_progress: ProgressCallback | None = None,
    progress: ProgressCallback | None = None,
) -> LesionStudy:
    """Load `model` from `repository`, decode the image folder `data`, run the study.

    Raises:
        models.repository.RepositoryError: the model or version is not there.
        FileNotFoundError: `data` has no class subfolders.
        StudyConfigError: a setting of `config` does not fit the model.
    """
    runtime = load_runtime(repository, model, version)
    try:
        config.check(runtime.num_blocks)
        started = time.perf_counter()
        images = load_folder(
            data, runtime.preprocessing, runtime.labels, limit=limit, progress=decode_progress
        )
        decoding_s = time.perf_counter() - started
        study = run_study(runtime, images, config, progress)
    finally:
        runtime.close()
    seconds = {"decoding": decoding_s, **study.seconds}
    return replace(study, data=str(data), limit=limit, seconds=seconds)


def _make_plan(
    runtime: ModelRuntime, config: StudyConfig, reorderer: BlockReorderer | None
) -> _Plan:
    # Separate streams: asking for reordering leaves the removal sets unchanged.
    removal_seed, reorder_seed = np.random.SeedSequence(config.seed).spawn(2)
    num_blocks = runtime.num_blocks
    grid = list(config.grid or default_grid(num_blocks))
    sets = draw_removal_sets(num_blocks, grid, config.draws, np.random.default_rng(removal_seed))
    if reorderer is None:
        return _Plan(grid, sets, [], [])

    stages = [block["stage"] for block in runtime.blocks]
    pairs = swappable_pairs(stages, reorderer.swappable)
    if not pairs:
        raise StudyConfigError(
            f"cannot reorder {runtime.name}: no two blocks of one stage can be swapped"
        )
    swaps_grid = list(config.swaps_grid or default_swaps_grid(sum(reorderer.swappable)))
    orders = draw_orders(
        num_blocks, pairs, swaps_grid, config.draws, np.random.default_rng(reorder_seed)
    )
    return _Plan(grid, sets, swaps_grid, orders)


def _evaluate(
    runtime: ModelRuntime,
    images: LabelledImages,
    plan: _Plan,
    reorderer: BlockReorderer | None,
    progress: ProgressCallback | None,
) -> _Errors:
    """Predictions for every distinct set and order of the plan, one pass each."""
    sets = plan.distinct_sets(runtime.num_blocks)
    orders = plan.distinct_orders() if reorderer is not None else []
    step = _Counter(len(sets) + len(orders), progress)
    errors = _Errors(images.labels)

    started = time.perf_counter()
    for removed in sets:
        errors.by_set[removed] = step(predict, runtime, images.inputs, removed)
    errors.seconds["removal"] = time.perf_counter() - started

    if reorderer is not None:
        started = time.perf_counter()
        for order in orders:
            errors.by_order[order] = step(reorderer.predict, order, images.inputs)
        errors.seconds["reordering"] = time.perf_counter() - started
    return errors


class _Errors:
    """Predictions of every evaluation, and the top-1 error of any of them."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.by_set: dict[RemovedSet, np.ndarray] = {}
        self.by_order: dict[tuple[int, ...], np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def of_set(self, removed: Sequence[int]) -> float:
        return top1_error(self.by_set[frozenset(removed)], self.labels)

    def of_order(self, order: Sequence[int]) -> float:
        # Orders left out of the evaluations are the network's own.
        found = self.by_order.get(tuple(order), self.by_set[frozenset()])
        return top1_error(found, self.labels)


def _reorder_points(plan: _Plan, errors: _Errors) -> list[ReorderPoint]:
    return [
        ReorderPoint(
            swaps,
            drawn,
            [kendall_tau(order) for order in drawn],
            [errors.of_order(order) for order in drawn],
        )
        for swaps, drawn in zip(plan.swaps_grid, plan.orders, strict=True)
    ]


def _block_lesion(block: dict[str, Any], error: float) -> BlockLesion:
    return BlockLesion(block["index"], block["name"], block["stage"], block["downsample"], error)


class _Counter:
    """Runs evaluations one by one and reports how many are done."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def __call__(self, evaluate: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        started = time.perf_counter()
        result = evaluate(*args)
        self.done += 1
        logger.debug(
            "evaluation %d of %d took %.2f s", self.done, self.total, time.perf_counter() - started
        )
        if self.progress is not None:
            self.progress(self.done, self.total)
        return result
