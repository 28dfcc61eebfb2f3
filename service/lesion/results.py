"""What a lesion study measured: per block, per k, per amount of reordering."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from service.runtime.model import RemovedSet


@dataclass
class BlockLesion:
    """The error with one block removed."""

    index: int
    name: str
    stage: int
    downsample: bool
    error: float


@dataclass
class RemovalPoint:
    """The errors of `draws` random sets of k removed blocks."""

    k: int
    sets: list[list[int]]
    errors: list[float]

    def to_dict(self) -> dict[str, Any]:
        summary = _error_summary(self.errors)
        return {"k": self.k, **summary, "errors": self.errors, "sets": self.sets}


@dataclass
class ReorderPoint:
    """The errors of `draws` orders made by `swaps` random swaps."""

    swaps: int
    orders: list[list[int]]
    kendall_tau: list[float]
    errors: list[float]

    def to_dict(self) -> dict[str, Any]:
        summary = {
            **_error_summary(self.errors),
            "mean_kendall_tau": float(np.mean(self.kendall_tau)),
        }
        return {
            "swaps": self.swaps,
            **summary,
            "kendall_tau": self.kendall_tau,
            "errors": self.errors,
            "orders": self.orders,
        }


@dataclass
class LesionStudy:
    """Every figure of one study and the settings that produced it.

    `seconds` says where the time went (decoding, removal, reordering).
    `predictions` holds the top-1 class of every image for every evaluated
    set of removed blocks (the empty set is the full network); it is kept for
    checks and is not written out.
    """

    model: str
    version: int
    images: int
    classes: int
    seed: int
    draws: int
    grid: list[int]
    baseline_error: float
    blocks: list[BlockLesion]
    removal: list[RemovalPoint]
    reordering: list[ReorderPoint] | None
    seconds: dict[str, float]
    data: str | None = None
    limit: int | None = None
    predictions: dict[RemovedSet, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but `predictions`, as JSON-ready values."""
        reordering = None
        if self.reordering is not None:
            reordering = [point.to_dict() for point in self.reordering]
        return {
            "model": self.model,
            "version": self.version,
            "data": self.data,
            "images": self.images,
            "classes": self.classes,
            "limit": self.limit,
            "seed": self.seed,
            "draws": self.draws,
            "grid": self.grid,
            "seconds": {step: round(value, 1) for step, value in self.seconds.items()},
            "baseline_error": self.baseline_error,
            "blocks": [asdict(block) for block in self.blocks],
            "removal": [point.to_dict() for point in self.removal],
            "reordering": reordering,
        }


def _error_summary(errors: list[float]) -> dict[str, float]:
    """Mean, lowest and highest of the draws' errors."""
    return {"mean": float(np.mean(errors)), "min": min(errors), "max": max(errors)}
