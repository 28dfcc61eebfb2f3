"""The figure of a lesion study: single blocks, k random blocks, reordering.

Drawn on matplotlib's Agg canvas directly, without pyplot, so that no GUI
backend is chosen and no global figure state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from service.lesion.results import LesionStudy

KEPT_COLOUR = "#4c72b0"
DOWNSAMPLE_COLOUR = "#dd8452"
BASELINE_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1}


def write_plot(study: LesionStudy, path: Path, dpi: int = 120) -> None:
    """Save the study's figure as a PNG: one panel per experiment."""
    panels = 2 if study.reordering is None else 3
    figure = Figure(figsize=(11, 3.8 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1)
    figure.suptitle(f"Lesion study of {study.model} on {study.images} images")

    _plot_blocks(axes[0], study)
    _plot_removal(axes[1], study)
    if study.reordering is not None:
        _plot_reordering(axes[2], study)
    figure.savefig(path, dpi=dpi)


def _plot_blocks(axes: Axes, study: LesionStudy) -> None:
    indices = [block.index for block in study.blocks]
    errors = [block.error * 100 for block in study.blocks]
    colours = [DOWNSAMPLE_COLOUR if block.downsample else KEPT_COLOUR for block in study.blocks]
    axes.bar(indices, errors, color=colours)
    baseline = axes.axhline(
        study.baseline_error * 100,
        label=f"no block removed ({study.baseline_error:.2%})",
        **BASELINE_STYLE,
    )

    # A dotted line where a stage ends, so the stages read as groups.
    stages = [block.stage for block in study.blocks]
    for position in range(1, len(stages)):
        if stages[position] != stages[position - 1]:
            axes.axvline(position - 0.5, color="grey", linestyle=":", linewidth=1)

    axes.set_xticks(indices, [block.name for block in study.blocks], rotation=90, fontsize=7)
    axes.set_xlim(-0.6, len(indices) - 0.4)
    axes.set_ylabel("top-1 error (%)")
    axes.set_title("One block removed")
    handles = [
        Patch(color=KEPT_COLOUR, label="block removed"),
        Patch(color=DOWNSAMPLE_COLOUR, label="downsampling block removed"),
        baseline,
    ]
    axes.legend(handles=handles, loc="upper right", fontsize=8)


def _plot_removal(axes: Axes, study: LesionStudy) -> None:
    ks = np.array([point.k for point in study.removal])
    errors = [np.asarray(point.errors) * 100 for point in study.removal]
    means = np.array([values.mean() for values in errors])
    lows = np.array([values.min() for values in errors])
    highs = np.array([values.max() for values in errors])

    axes.fill_between(ks, lows, highs, color=KEPT_COLOUR, alpha=0.2, label="min to max")
    for k, values in zip(ks, errors, strict=True):
        axes.scatter(np.full(len(values), k), values, color=KEPT_COLOUR, s=10, alpha=0.6)
    axes.plot(ks, means, marker="o", color=KEPT_COLOUR, label=f"mean of {study.draws} draws")
    _reference_lines(axes, study)

    axes.set_xticks(ks)
    axes.set_xlabel("random blocks removed (k)")
    axes.set_ylabel("top-1 error (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"k random blocks removed (of {len(study.blocks)})")
    axes.legend(loc="best", fontsize=8)


def _plot_reordering(axes: Axes, study: LesionStudy) -> None:
    points = study.reordering or []
    for point in points:
        axes.scatter(
            point.kendall_tau,
            np.asarray(point.errors) * 100,
            s=14,
            alpha=0.7,
            label=f"{point.swaps} swap{'s' if point.swaps > 1 else ''}",
        )
    _reference_lines(axes, study)

    axes.invert_xaxis()
    axes.set_xlabel("Kendall tau between the new and the trained order (1: unchanged)")
    axes.set_ylabel("top-1 error (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Blocks swapped within their stage")
    axes.legend(loc="best", fontsize=8, ncols=2)


def _reference_lines(axes: Axes, study: LesionStudy) -> None:
    axes.axhline(study.baseline_error * 100, label="no block removed", **BASELINE_STYLE)
    chance = (1 - 1 / study.classes) * 100
    axes.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
