"""The lesion study on ResNet-20: its figures, its files, and agreement with the HTTP API.

The study runs the service's runtime in-process; the server fixture is a real
`resnet-serve serve` process, so agreement means the study measures what the
API answers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.lesion.dataset import LabelledImages
from service.lesion.evaluation import top1_error
from service.lesion.report import write_report
from service.lesion.results import LesionStudy
from service.lesion.sampling import default_grid, kendall_tau
from service.lesion.study import StudyConfig, run_study
from service.runtime.model import ModelRuntime
from tests.helpers import ServerProcess
from tests.lesion.conftest import MODEL

# Small enough to run three times in a few seconds, with every kind of draw.
SMALL = StudyConfig(grid=(2, 5), draws=3, reorder=True, swaps_grid=(1, 3))
# The server's default limit is 64 images per request.
IMAGES_PER_REQUEST = 25


def _serve(server: ServerProcess, paths: list[Path], route: str, **params: int) -> np.ndarray:
    """Top-1 class of every image file, as the HTTP API answers."""
    predicted: list[int] = []
    for start in range(0, len(paths), IMAGES_PER_REQUEST):
        files = [
            ("file", (path.name, path.read_bytes(), "image/jpeg"))
            for path in paths[start : start + IMAGES_PER_REQUEST]
        ]
        response = httpx.post(
            f"{server.url}/v1/models/{MODEL}/{route}",
            files=files,
            params={"top_k": 1, **params},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predicted += [row["top"][0]["class_id"] for row in response.json()["predictions"]]
    return np.asarray(predicted)


def _one_per_class(images: LabelledImages) -> LabelledImages:
    first = [list(images.labels).index(label) for label in sorted(set(images.labels))]
    return LabelledImages(
        images.inputs[first], images.labels[first], [images.paths[i] for i in first]
    )


def test_one_entry_per_block_in_network_order(study: LesionStudy, runtime: ModelRuntime) -> None:
    described = [(b["index"], b["name"], b["stage"], b["downsample"]) for b in runtime.blocks]
    found = [(b.index, b.name, b.stage, b.downsample) for b in study.blocks]
    assert found == described
    assert len(found) == runtime.num_blocks


def test_every_error_comes_from_the_kept_predictions(
    study: LesionStudy, images: LabelledImages
) -> None:
    def error(removed: list[int]) -> float:
        return top1_error(study.predictions[frozenset(removed)], images.labels)

    assert study.images == len(images.labels)
    assert study.baseline_error == error([])
    assert [block.error for block in study.blocks] == [error([b.index]) for b in study.blocks]
    for point in study.removal:
        assert point.errors == [error(drawn) for drawn in point.sets]


def test_default_grid_draws_sets_of_k_distinct_blocks(
    study: LesionStudy, runtime: ModelRuntime
) -> None:
    assert study.grid == default_grid(runtime.num_blocks)
    assert study.grid[0] == 1 and study.grid[-1] == runtime.num_blocks
    assert [point.k for point in study.removal] == study.grid
    for point in study.removal:
        assert len(point.sets) == len(point.errors) == study.draws
        for drawn in point.sets:
            assert drawn == sorted(set(drawn)) and len(drawn) == point.k
            assert all(0 <= index < runtime.num_blocks for index in drawn)


def test_reordering_moves_only_identity_blocks_within_their_stage(
    study: LesionStudy, runtime: ModelRuntime
) -> None:
    stages = [block["stage"] for block in runtime.blocks]
    assert study.reordering is not None
    orders = [order for point in study.reordering for order in point.orders]
    for point in study.reordering:
        assert point.kendall_tau == [kendall_tau(order) for order in point.orders]
    for order in orders:
        assert sorted(order) == list(range(runtime.num_blocks))
        for position, block in enumerate(order):
            assert stages[block] == stages[position]
            if runtime.blocks[position]["downsample"]:
                assert block == position
    assert any(order != sorted(order) for order in orders)


def test_same_seed_draws_the_same_sets_and_orders(
    runtime: ModelRuntime, images: LabelledImages
) -> None:
    few = _one_per_class(images)
    first = run_study(runtime, few, SMALL).to_dict()
    again = run_study(runtime, few, SMALL).to_dict()
    other = run_study(runtime, few, replace(SMALL, seed=1)).to_dict()

    assert [p["sets"] for p in again["removal"]] == [p["sets"] for p in first["removal"]]
    assert [p["orders"] for p in again["reordering"]] == [p["orders"] for p in first["reordering"]]
    assert again["blocks"] == first["blocks"] and again["removal"] == first["removal"]
    assert [p["sets"] for p in other["removal"]] != [p["sets"] for p in first["removal"]]
    assert [p["orders"] for p in other["reordering"]] != [p["orders"] for p in first["reordering"]]


def test_reordering_leaves_the_removal_draws_alone(
    runtime: ModelRuntime, images: LabelledImages
) -> None:
    few = _one_per_class(images)
    with_reorder = run_study(runtime, few, SMALL)
    without = run_study(runtime, few, replace(SMALL, reorder=False, swaps_grid=None))
    assert without.reordering is None
    assert [p.sets for p in without.removal] == [p.sets for p in with_reorder.removal]


def test_baseline_equals_the_http_api(
    server: ServerProcess, study: LesionStudy, images: LabelledImages
) -> None:
    served = _serve(server, images.paths, "classify")
    np.testing.assert_array_equal(study.predictions[frozenset()], served)
    assert study.baseline_error == top1_error(served, images.labels)


@pytest.mark.parametrize("pick", [max, min], ids=["most-harmful", "least-harmful"])
def test_single_block_error_equals_the_subnetwork_api(
    server: ServerProcess, study: LesionStudy, images: LabelledImages, pick: object
) -> None:
    block = pick(study.blocks, key=lambda lesion: lesion.error)  # type: ignore[operator]
    served = _serve(server, images.paths, "subnetwork/classify", remove=block.index)

    np.testing.assert_array_equal(study.predictions[frozenset([block.index])], served)
    assert block.error == top1_error(served, images.labels)
    # Removing the block must show: the same answers as the full network
    # would mean that nothing was removed on one side or the other.
    assert (served != study.predictions[frozenset()]).any()


def test_report_files_hold_the_study(study: LesionStudy, tmp_path: Path) -> None:
    paths = write_report(study, tmp_path / "report")
    assert [path.name for path in paths] == ["lesion.json", "lesion.md", "lesion.png"]

    written = json.loads(paths[0].read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(study.to_dict()))
    assert written["model"] == MODEL and written["images"] == study.images
    assert len(written["blocks"]) == len(study.blocks)
    assert written["grid"] == [point["k"] for point in written["removal"]]
    for point in written["removal"] + written["reordering"]:
        assert (point["min"], point["max"]) == (min(point["errors"]), max(point["errors"]))
        assert point["mean"] == pytest.approx(np.mean(point["errors"]))

    markdown = paths[1].read_text(encoding="utf-8")
    assert f"**{study.baseline_error * 100:.2f}%**" in markdown
    for block in study.blocks:
        assert f"| {block.index} | {block.name} | {block.stage} |" in markdown
    for point in study.removal:
        assert f"\n| {point.k} | " in markdown

    with Image.open(paths[2]) as figure:
        assert figure.format == "PNG" and figure.width >= 1000
