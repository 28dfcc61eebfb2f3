"""Structural block removal: the PyTorch reference for sub-networks.

The exported graph removes blocks by gating their residual branch with a mask.
This module removes them by replacing each chosen block with a module that
computes only its shortcut path, so that tests compare two independent
definitions of the same sub-network.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import Tensor, nn

from models.blocks import ResidualBlock
from models.network import ResidualNetwork


class RemovedBlock(nn.Module):
    """Stands in for a removed block: its shortcut and post-addition activation."""

    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        return self.block.shortcut_only(x)


def remove_blocks(network: ResidualNetwork, indices: Iterable[int]) -> ResidualNetwork:
    """A copy of `network` whose blocks at `indices` are replaced by their shortcut."""
    chosen = set(indices)
    named = network.named_blocks()
    unknown = sorted(i for i in chosen if not 0 <= i < len(named))
    if unknown:
        raise IndexError(f"block indices {unknown} outside 0..{len(named) - 1}")

    pruned = copy.deepcopy(network)
    for index, (name, _) in enumerate(pruned.named_blocks()):
        if index in chosen:
            stage_name, position = name.split(".")
            stage = getattr(pruned, stage_name)
            stage[int(position)] = RemovedBlock(stage[int(position)])
    return pruned
