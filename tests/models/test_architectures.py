"""Architectures: block lists, compute counts, and checkpoint compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.build import build_network, load_weights, read_state_dict
from models.manifest import MANIFEST, get_spec
from models.network import count_macs
from tests.helpers import weights_mirror

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_resnet_state_dicts.json"


def test_cifar_block_list_of_resnet20() -> None:
    blocks = build_network("cifar", 20, False).describe_blocks()
    assert [b.name for b in blocks] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert [b.index for b in blocks] == list(range(9))
    assert [b.stage for b in blocks] == [1] * 3 + [2] * 3 + [3] * 3
    assert [b.downsample for b in blocks] == [False] * 3 + [True, False, False] * 2
    # Option A shortcut: no parameters beyond the two 3x3 convolutions and BNs.
    assert blocks[3].params == 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32
    # layer1 block at 32x32: two 3x3 convs of 16 channels.
    assert blocks[0].macs == 2 * 32 * 32 * 16 * 16 * 9


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 26])
def test_cifar_depth_is_6n_plus_2(depth: int) -> None:
    network = build_network("cifar", depth, False)
    assert network.num_blocks == 3 * (depth - 2) // 6


def test_cifar_rejects_other_depths() -> None:
    with pytest.raises(ValueError, match="6n"):
        build_network("cifar", 21, False)


def test_resnet50_counts_match_the_published_figures() -> None:
    network = build_network("imagenet", 50, False)
    assert sum(p.numel() for p in network.parameters()) == 25_557_032
    total = sum(count_macs(network, (224, 224)).values())
    assert round(total / 1e9, 1) == 4.1
    blocks = network.describe_blocks()
    assert len(blocks) == 16
    assert [b.name for b in blocks if b.downsample] == ["layer2.0", "layer3.0", "layer4.0"]
    # layer1.0 keeps the resolution but widens 64 -> 256 channels, so it has a
    # projection shortcut too, which still runs when the block is removed.
    assert [b.name for b in blocks if b.removable_macs < b.macs] == [
        "layer1.0", "layer2.0", "layer3.0", "layer4.0"]


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_parameter_names_and_shapes(depth: int) -> None:
    expected = json.loads(FIXTURE.read_text())["models"][f"resnet{depth}"]
    network = build_network("imagenet", depth, False)
    ours = [[key, list(value.shape)] for key, value in network.state_dict().items()]
    assert sorted(ours) == sorted(expected)

    # A checkpoint with exactly torchvision's names and shapes loads strictly.
    checkpoint = {key: torch.zeros(shape) for key, shape in expected}
    build_network("imagenet", depth, False).load_state_dict(checkpoint, strict=True)


@pytest.mark.parametrize("name", ["resnet20-cifar10", "resnet32-cifar10",
                                  "resnet44-cifar10", "resnet56-cifar10"])
def test_published_cifar_checkpoints_load_strictly(name: str) -> None:
    spec = get_spec(name)
    path = weights_mirror() / "cifar10" / spec.weights.file_name  # type: ignore[union-attr]
    if not path.exists():
        pytest.skip(f"no mirrored weights at {path}")
    state = read_state_dict(path)
    assert not any(key.startswith("module.") for key in state)
    network = load_weights(build_network("cifar", spec.depth, False), path)
    assert not network.training


@pytest.mark.parametrize("family,depth", [("cifar", 20), ("imagenet", 18), ("imagenet", 50)])
def test_preactivation_variants_build_and_run(family: str, depth: int) -> None:
    network = build_network(family, depth, True).eval()
    size = network.input_size
    with torch.no_grad():
        out = network(torch.randn(2, 3, *size))
    assert out.shape == (2, 10 if family == "cifar" else 1000)
    assert torch.isfinite(out).all()


def test_manifest_covers_the_published_models() -> None:
    for depth in (20, 32, 44, 56, 110):
        spec = get_spec(f"resnet{depth}-cifar10")
        assert spec.weights is not None and spec.weights.url.startswith("https://github.com/")
    for depth in (18, 34, 50, 101, 152):
        spec = get_spec(f"resnet{depth}-imagenet")
        assert spec.weights is not None
        assert spec.weights.url.startswith("https://download.pytorch.org/models/")
        assert not spec.weights.verified_here
        # The publisher's file-name prefix is what the fetch step checks.
        assert spec.weights.file_name.split("-")[1].startswith(spec.weights.sha256)
    verified = [s for s in MANIFEST.values() if s.weights and s.weights.verified_here]
    assert sorted(s.name for s in verified) == [
        "resnet20-cifar10", "resnet32-cifar10", "resnet44-cifar10", "resnet56-cifar10"]
    assert all(len(s.weights.sha256) == 64 for s in verified)  # type: ignore[union-attr]
    preact = [s for s in MANIFEST.values() if s.preactivation]
    assert preact and all(s.weights is None for s in preact)
