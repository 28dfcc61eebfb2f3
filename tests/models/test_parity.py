"""ONNX Runtime equals PyTorch, for every architecture, with and without blocks.

The PyTorch reference for a sub-network removes blocks structurally
(`models.subnetwork.remove_blocks`), not with the mask the export uses, so a
wrong definition of "removed" cannot agree with itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.build import build_network, load_weights
from models.export import export_onnx
from models.manifest import get_spec
from models.network import ResidualNetwork
from models.preprocessing import decode_and_preprocess
from models.subnetwork import remove_blocks
from service.runtime.pruning import prune_graph
from tests.helpers import CIFAR_SAMPLES, weights_mirror

# (family, depth, preactivation): every architecture and variant.
ARCHITECTURES = [
    ("cifar", 20, False), ("cifar", 32, False), ("cifar", 56, False), ("cifar", 110, False),
    ("cifar", 20, True), ("cifar", 56, True), ("cifar", 110, True),
    ("imagenet", 18, False), ("imagenet", 34, False), ("imagenet", 50, False),
    ("imagenet", 101, False), ("imagenet", 152, False),
    ("imagenet", 18, True), ("imagenet", 34, True), ("imagenet", 50, True),
    ("imagenet", 101, True), ("imagenet", 152, True),
]
REAL_CIFAR = ["resnet20-cifar10", "resnet32-cifar10", "resnet44-cifar10", "resnet56-cifar10"]


def _randomise_statistics(network: ResidualNetwork, seed: int) -> ResidualNetwork:
    """Give every BatchNorm non-trivial statistics, as trained weights have."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return network.eval()


def _removal_sets(num_blocks: int, seed: int) -> list[list[int]]:
    """No block, one early block, the first downsampling-ish middle, a random third."""
    rng = np.random.default_rng(seed)
    third = sorted(rng.choice(num_blocks, size=max(1, num_blocks // 3), replace=False).tolist())
    return [[], [0], [num_blocks // 2], [num_blocks - 1], third]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _reference(network: ResidualNetwork, x: torch.Tensor, removed: list[int]) -> np.ndarray:
    with torch.no_grad():
        return remove_blocks(network, removed)(x).numpy()


def _masked(session: ort.InferenceSession, x: np.ndarray, sets: list[list[int]],
            num_blocks: int) -> np.ndarray:
    mask = np.ones((len(x), num_blocks), dtype=np.float32)
    for row, removed in enumerate(sets):
        mask[row, removed] = 0.0
    return session.run(["logits"], {"input": x, "block_mask": mask})[0]


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize(("family", "depth", "preact"), ARCHITECTURES,
                         ids=[f"{f}{d}{'-preact' if p else ''}" for f, d, p in ARCHITECTURES])
def test_random_weights_match_pytorch(
    tmp_path: Path, family: str, depth: int, preact: bool
) -> None:
    torch.manual_seed(depth)
    network = _randomise_statistics(build_network(family, depth, preact), depth)
    path = tmp_path / "model.onnx"
    export_onnx(network, path)
    session = _session(path)
    n = network.num_blocks
    size = network.input_size
    sets = _removal_sets(n, depth)
    # ImageNet networks at 224x224 are slow on two cores: fewer sets, same coverage
    # of the mechanisms (none, single, several, mixed within one batch).
    if family == "imagenet" and depth >= 101:
        sets = [sets[0], sets[2], sets[4]]

    for batch in (1, 7):
        x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(batch))
        for removed in sets:
            actual = _masked(session, x.numpy(), [removed] * batch, n)
            expected = _reference(network, x, removed)
            assert _relative_error(actual, expected) <= 1e-5, (batch, removed)

    # One batch of 7 whose rows remove different sets.
    x = torch.randn(7, 3, *size, generator=torch.Generator().manual_seed(99))
    mixed = [sets[i % len(sets)] for i in range(7)]
    actual = _masked(session, x.numpy(), mixed, n)
    for row, removed in enumerate(mixed):
        expected = _reference(network, x[row : row + 1], removed)
        assert _relative_error(actual[row : row + 1], expected) <= 1e-5, (row, removed)


@pytest.mark.parametrize("name", REAL_CIFAR)
def test_real_weights_match_pytorch_on_real_images(tmp_path: Path, name: str) -> None:
    spec = get_spec(name)
    mirror = weights_mirror()
    weights = mirror / "cifar10" / spec.weights.file_name  # type: ignore[union-attr]
    if not weights.exists():
        pytest.skip(f"no mirrored weights at {weights}")
    network = load_weights(build_network("cifar", spec.depth, False), weights)
    path = tmp_path / "model.onnx"
    gates = export_onnx(network, path)
    session = _session(path)
    n = network.num_blocks
    images = np.stack([
        decode_and_preprocess(p.read_bytes(), spec.preprocessing) for p in CIFAR_SAMPLES
    ])
    x = torch.from_numpy(images)
    sets = _removal_sets(n, 7)

    for removed in sets:
        expected = _reference(network, x, removed)
        masked = _masked(session, images, [removed] * len(images), n)
        assert np.abs(masked - expected).max() <= 1e-4, removed

        # The pruned graph the service builds for repeated sets must agree too.
        proto = prune_graph(onnx.load(str(path)), [vars(g) for g in gates], removed)
        pruned = ort.InferenceSession(proto.SerializeToString(),
                                      providers=["CPUExecutionProvider"])
        assert np.abs(pruned.run(["logits"], {"input": images})[0] - expected).max() <= 1e-4

    mixed = [sets[i % len(sets)] for i in range(len(images))]
    actual = _masked(session, images, mixed, n)
    for row, removed in enumerate(mixed):
        expected = _reference(network, x[row : row + 1], removed)
        assert np.abs(actual[row] - expected[0]).max() <= 1e-4
