"""CIFAR ResNets of He et al. 2015 (section 4.2) and their pre-activation form.

Depth 6n+2: a 3x3 stem, three stages of n basic blocks at 16, 32 and 64
channels, global average pooling and a linear classifier. Downsampling blocks
use the parameter-free option-A shortcut. Parameter names follow the
checkpoints published with https://github.com/akamaster/pytorch_resnet_cifar10
(`conv1`, `bn1`, `layer1.0.conv1`, ..., `linear`) so they load with
`strict=True` once their `module.` prefix is stripped.
"""

from __future__ import annotations

from torch import Tensor, nn

from models.blocks import BasicBlock, PreActBasicBlock, init_weights
from models.network import ResidualNetwork

STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """n for a CIFAR ResNet of depth 6n+2."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), "
            f"got {depth}"
        )
    return (depth - 2) // 6


class CifarResNet(ResidualNetwork):
    """Post-activation CIFAR ResNet (ReLU after each addition)."""

    input_size = (32, 32)
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=False)

        in_planes = 16
        for stage, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for position in range(n):
                stride = 2 if stage > 0 and position == 0 else 1
                blocks.append(BasicBlock(in_planes, width, stride, shortcut_type="A"))
                in_planes = width
            setattr(self, self.stage_names[stage], nn.Sequential(*blocks))

        self.linear = nn.Linear(64, num_classes)
        init_weights(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def head(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class PreActCifarResNet(ResidualNetwork):
    """Pre-activation CIFAR ResNet (He et al. 2016): BN and ReLU before the head."""

    input_size = (32, 32)
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)

        in_planes = 16
        for stage, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for position in range(n):
                stride = 2 if stage > 0 and position == 0 else 1
                blocks.append(
                    PreActBasicBlock(in_planes, width, stride, shortcut_type="A")
                )
                in_planes = width
            setattr(self, self.stage_names[stage], nn.Sequential(*blocks))

        # The last block ends in an addition; this is the activation the
        # pre-activation design moves after the final stage.
        self.final_bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.linear = nn.Linear(64, num_classes)
        init_weights(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def head(self, x: Tensor) -> Tensor:
        x = self.relu(self.final_bn(x))
        return self.linear(x.mean(dim=(2, 3)))
