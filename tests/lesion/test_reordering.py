"""Reordered graphs equal PyTorch networks whose blocks were moved the same way.

The PyTorch reference moves block modules between the slots of their stage;
the graph side renames tensors, so the two are independent definitions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.build import build_from_spec, load_weights
from models.manifest import get_spec
from models.network import ResidualNetwork
from models.prepare import RANDOM_INIT_SEED, export_known_model
from models.weights import fetch_weights
from service.lesion.dataset import LabelledImages
from service.lesion.evaluation import load_runtime, predict
from service.lesion.reordering import BlockReorderer
from service.runtime.model import ModelRuntime

# ResNet-20's movable blocks are 0, 1, 2 (stage 1), 4, 5 (stage 2), 7, 8 (stage 3).
ORDERS = {
    "one swap": [2, 1, 0, 3, 4, 5, 6, 7, 8],
    "one swap per stage": [1, 0, 2, 3, 5, 4, 6, 8, 7],
    "stage 1 rotated": [1, 2, 0, 3, 4, 5, 6, 7, 8],
}


@dataclass
class Case:
    runtime: ModelRuntime
    network: ResidualNetwork


@pytest.fixture(scope="module", params=["resnet20-cifar10", "preact-resnet20-cifar10"])
def case(
    request: pytest.FixtureRequest,
    runtime: ModelRuntime,
    mirror: Path,
    weights_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Case:
    """Published post-activation weights, and a randomly initialised pre-activation net."""
    spec = get_spec(request.param)
    if spec.weights is not None:
        weights = fetch_weights(spec, weights_cache, str(mirror))
        return Case(runtime, load_weights(build_from_spec(spec), weights))

    repository = tmp_path_factory.mktemp("preact")
    export_known_model(spec.name, repository, random_init=True)
    # The same seed rebuilds the same weights as the export used.
    torch.manual_seed(RANDOM_INIT_SEED)
    network = build_from_spec(spec).eval()
    loaded = load_runtime(repository, spec.name)
    request.addfinalizer(loaded.close)
    return Case(loaded, network)


def _moved(network: ResidualNetwork, order: list[int]) -> ResidualNetwork:
    moved = copy.deepcopy(network)
    blocks = [block for _, block in moved.named_blocks()]
    for position, (name, _) in enumerate(network.named_blocks()):
        stage_name, slot = name.split(".")
        getattr(moved, stage_name)[int(slot)] = blocks[order[position]]
    return moved


def _torch_logits(network: ResidualNetwork, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(inputs)).numpy()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_reordered_graph_equals_pytorch(case: Case, images: LabelledImages, name: str) -> None:
    order = ORDERS[name]
    graph = BlockReorderer(case.runtime).graph(order)
    onnx.checker.check_model(graph)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])

    logits = session.run(["logits"], {"input": images.inputs})[0]
    expected = _torch_logits(_moved(case.network, order), images.inputs)
    original = _torch_logits(case.network, images.inputs)

    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected - original).max() > 1e-2


def test_movable_blocks_are_those_with_an_identity_shortcut(case: Case) -> None:
    reorderer = BlockReorderer(case.runtime)
    modules = [block for _, block in case.network.named_blocks()]
    identity = [not block.downsamples for block in modules]
    assert reorderer.swappable == identity


def test_unchanged_order_is_the_full_network(runtime: ModelRuntime, images: LabelledImages) -> None:
    reorderer = BlockReorderer(runtime)
    order = list(range(runtime.num_blocks))
    assert reorderer.graph(order) == reorderer.unmasked
    np.testing.assert_array_equal(
        reorderer.predict(order, images.inputs), predict(runtime, images.inputs)
    )


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([0, 1, 3, 2, 4, 5, 6, 7, 8], "block 3 cannot move"),
        ([0, 1, 2, 6, 4, 5, 3, 7, 8], "block 6 cannot move"),
        ([0, 4, 2, 3, 1, 5, 6, 7, 8], "stage"),
        ([0, 0, 2, 3, 4, 5, 6, 7, 8], "permutation"),
        ([0, 1, 2], "permutation"),
    ],
    ids=["downsampling", "two-downsampling", "other-stage", "repeat", "short"],
)
def test_impossible_orders_are_refused(
    runtime: ModelRuntime, order: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BlockReorderer(runtime).graph(order)
