"""Write a lesion study out: `lesion.json`, `lesion.md` and `lesion.png`."""

from __future__ import annotations

import json
from pathlib import Path

from service.lesion.results import LesionStudy

JSON_FILE = "lesion.json"
MARKDOWN_FILE = "lesion.md"
PLOT_FILE = "lesion.png"


def write_report(study: LesionStudy, folder: Path) -> list[Path]:
    """Write all three files into `folder` (created if needed); return their paths."""
    # matplotlib is imported here so that the JSON and Markdown writers work without it.
    from service.lesion.plot import write_plot

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / JSON_FILE, folder / MARKDOWN_FILE, folder / PLOT_FILE]
    write_json(study, paths[0])
    write_markdown(study, paths[1])
    write_plot(study, paths[2])
    return paths


def write_json(study: LesionStudy, path: Path) -> None:
    """Every figure and setting of the study (errors as fractions in [0, 1])."""
    path.write_text(json.dumps(study.to_dict(), indent=1) + "\n", encoding="utf-8")


def write_markdown(study: LesionStudy, path: Path) -> None:
    """Tables of the study, errors in percent."""
    path.write_text("\n".join(markdown_lines(study)) + "\n", encoding="utf-8")


def markdown_lines(study: LesionStudy) -> list[str]:
    """The Markdown report, line by line."""
    source = f" from `{study.data}`" if study.data is not None else ""
    limit = f", first {study.limit} per class" if study.limit is not None else ""
    lines = [
        f"# Lesion study of {study.model} (version {study.version})",
        "",
        (
            f"{study.images} images{source}{limit}; seed {study.seed}, "
            f"{study.draws} draws per point; {_timing(study.seconds)}."
        ),
        "",
        f"Baseline top-1 error (no block removed): **{_percent(study.baseline_error)}**.",
    ]
    lines += _block_table(study)
    lines += _removal_table(study)
    if study.reordering is not None:
        lines += _reorder_table(study)
    return lines


def _block_table(study: LesionStudy) -> list[str]:
    lines = [
        "",
        "## One block removed",
        "",
        "| block | name | stage | downsample | error | change |",
        "|---:|---|---:|:---:|---:|---:|",
    ]
    for block in study.blocks:
        change = (block.error - study.baseline_error) * 100
        lines.append(
            f"| {block.index} | {block.name} | {block.stage} | "
            f"{'yes' if block.downsample else ''} | {_percent(block.error)} | {change:+.2f} |"
        )
    return lines


def _removal_table(study: LesionStudy) -> list[str]:
    lines = [
        "",
        "## k random blocks removed",
        "",
        "| k | distinct sets | mean error | min | max |",
        "|---:|---:|---:|---:|---:|",
    ]
    for point in study.removal:
        summary = point.to_dict()
        distinct = len({tuple(drawn) for drawn in point.sets})
        lines.append(
            f"| {point.k} | {distinct} of {len(point.sets)} | {_percent(summary['mean'])} | "
            f"{_percent(summary['min'])} | {_percent(summary['max'])} |"
        )
    return lines


def _reorder_table(study: LesionStudy) -> list[str]:
    lines = [
        "",
        "## Blocks swapped within their stage",
        "",
        "| swaps | mean Kendall tau | mean error | min | max |",
        "|---:|---:|---:|---:|---:|",
    ]
    for point in study.reordering or []:
        summary = point.to_dict()
        lines.append(
            f"| {point.swaps} | {summary['mean_kendall_tau']:.3f} | "
            f"{_percent(summary['mean'])} | {_percent(summary['min'])} | "
            f"{_percent(summary['max'])} |"
        )
    return lines


def _timing(seconds: dict[str, float]) -> str:
    steps = ", ".join(f"{step} {value:.0f} s" for step, value in seconds.items())
    return f"{sum(seconds.values()):.0f} s in all ({steps})"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"
