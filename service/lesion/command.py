"""`resnet-serve lesion`: arguments, progress bars, and the files it writes.

Importing this module is cheap: ONNX Runtime, tqdm and matplotlib are
imported when the command runs, so `serve` never needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from service.settings import Settings

# Not docs/lesion/: a run started from the repository root would overwrite the
# published results kept there.
DEFAULT_OUT = Path("lesion-results")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `lesion` subcommand's options."""
    parser.add_argument("--model", required=True, help="model name in the repository")
    parser.add_argument(
        "--version", type=int, default=None, help="model version (default: the highest)"
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=Settings.model_fields["model_repository"].default,
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="labelled image folder, one subfolder per class"
    )
    parser.add_argument(
        "--limit", type=_positive, default=None, help="first N images of each class (default: all)"
    )
    parser.add_argument(
        "--grid",
        type=_int_list,
        default=None,
        help="numbers of random blocks removed, e.g. 1,2,4,8 (default: "
        "about 9 values from 1 to all blocks)",
    )
    parser.add_argument(
        "--draws", type=_positive, default=5, help="random draws per point of the grid (default: 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    parser.add_argument(
        "--reorder", action="store_true", help="also swap pairs of blocks within their stage"
    )
    parser.add_argument(
        "--swaps",
        type=_int_list,
        default=None,
        help="swap counts for --reorder (default: 1, 2, 4, ... up to the number of movable blocks)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT}/<model>)"
    )


def main(args: argparse.Namespace) -> int:
    """Run the study, write its three files and print where they are."""
    from service.lesion.report import write_report
    from service.lesion.dataset import FolderLayoutError
    from service.lesion.study import StudyConfig, StudyConfigError, study_folder

    config = StudyConfig(
        grid=args.grid,
        draws=args.draws,
        seed=args.seed,
        reorder=args.reorder,
        swaps_grid=args.swaps,
    )
    decoding, evaluating = _CountBar("decoding", "image"), _CountBar("evaluating", "pass")
    try:
        study = study_folder(
            args.repository,
            args.model,
            args.data,
            config,
            version=args.version,
            limit=args.limit,
            decode_progress=decoding,
            progress=evaluating,
        )
    except (StudyConfigError, FolderLayoutError) as exc:
        print(f"resnet-serve lesion: {exc}", file=sys.stderr)
        return 2
    finally:
        decoding.close()
        evaluating.close()

    out = args.out if args.out is not None else DEFAULT_OUT / args.model
    paths = write_report(study, out)
    print(
        f"{study.model}: baseline top-1 error {study.baseline_error:.2%} on "
        f"{study.images} images in {sum(study.seconds.values()):.0f} s"
    )
    for path in paths:
        print(f"wrote {path}")
    return 0


class _CountBar:
    """A tqdm bar fed by the study's (done, total) callbacks."""

    def __init__(self, label: str, unit: str) -> None:
        self.label = label
        self.unit = unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    """`1,2,4` -> (1, 2, 4); at least one value."""
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values
