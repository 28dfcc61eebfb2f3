"""The part every ResNet shares: stem, stages of residual blocks, head.

Subclasses build the layers under the names the published checkpoints use;
this base class walks the blocks in network order, applies a per-sample block
mask and describes each block (index, name, stage, parameters, MACs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.blocks import ResidualBlock


@dataclass(frozen=True)
class BlockInfo:
    """What a client needs to know to choose blocks to remove.

    `macs` counts multiply-accumulates of the whole block at the model's input
    size; `removable_macs` is the part that removing the block saves (its
    residual branch: a projection shortcut still runs).
    """

    index: int
    name: str
    stage: int
    downsample: bool
    params: int
    macs: int
    removable_macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResidualNetwork(nn.Module):
    """Base class: `stages` is the ordered list of `nn.Sequential` block stages."""

    input_size: tuple[int, int]
    stage_names: tuple[str, ...]

    def stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def named_blocks(self) -> list[tuple[str, ResidualBlock]]:
        """Residual blocks in network order, named like `layer2.0`."""
        named = []
        for stage_name in self.stage_names:
            stage = getattr(self, stage_name)
            for position, block in enumerate(stage):
                named.append((f"{stage_name}.{position}", block))
        return named

    @property
    def num_blocks(self) -> int:
        return len(self.named_blocks())

    def forward(self, x: Tensor, block_mask: Tensor | None = None) -> Tensor:
        """Logits; `block_mask` ([batch, num_blocks]) scales each residual branch."""
        x = self.stem(x)

        for index, (_, block) in enumerate(self.named_blocks()):
            gate = None
            if block_mask is not None:
                gate = block_mask[:, index].reshape(-1, 1, 1, 1)
            x = block(x, gate)

        return self.head(x)

    def describe_blocks(self) -> list[BlockInfo]:
        """One `BlockInfo` per residual block, MACs measured at `input_size`."""
        conv_macs = count_macs(self, self.input_size)
        infos = []
        for index, (name, block) in enumerate(self.named_blocks()):
            prefix = name + "."
            macs = sum(m for key, m in conv_macs.items() if key.startswith(prefix))
            shortcut_macs = sum(
                m
                for key, m in conv_macs.items()
                if key.startswith(prefix + "downsample.")
            )
            infos.append(
                BlockInfo(
                    index=index,
                    name=name,
                    stage=self.stage_names.index(name.split(".")[0]) + 1,
                    downsample=block.downsamples,
                    params=sum(p.numel() for p in block.parameters()),
                    macs=macs,
                    removable_macs=macs - shortcut_macs,
                )
            )
        return infos


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> dict[str, int]:
    """Multiply-accumulates of every convolution and linear layer, by module name.

    Only these layers are counted, the convention behind the usual "4.1 G" for
    ResNet-50; normalisation, activations, additions and pooling are not.
    """
    macs: dict[str, int] = {}
    hooks = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_output = (module.in_channels // module.groups) * kh * kw
            else:
                per_output = module.in_features  # type: ignore[assignment]
            macs[name] = int(output[0].numel()) * int(per_output)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(make_hook(name)))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        model.train(was_training)
        for handle in hooks:
            handle.remove()
    return macs
