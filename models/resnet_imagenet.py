"""ImageNet ResNets (He et al. 2015) and their pre-activation form (He et al. 2016).

Layer names match torchvision's `torchvision/models/resnet.py` (`conv1`, `bn1`,
`layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), so its published checkpoints
load with `strict=True`. Bottlenecks put the stride on the 3x3 convolution, as
torchvision does ("ResNet V1.5").
"""

from __future__ import annotations

from torch import Tensor, nn

from models.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualBlock,
    init_weights,
)
from models.network import ResidualNetwork

#: Blocks per stage and block kind for each standard depth.
LAYOUTS: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


def _layout(depth: int) -> tuple[tuple[int, int, int, int], bool]:
    if depth not in LAYOUTS:
        raise ValueError(
            f"ImageNet ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}"
        )
    return LAYOUTS[depth]


class ImageNetResNet(ResidualNetwork):
    """ResNet-18/34/50/101/152 with projection ("option B") shortcuts."""

    input_size = (224, 224)
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self, depth: int, num_classes: int = 1000, preactivation: bool = False
    ) -> None:
        super().__init__()
        counts, bottleneck = _layout(depth)
        self.depth = depth
        self.preactivation = preactivation
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_planes = 64
        for stage, count in enumerate(counts):
            width = 64 * 2**stage
            blocks = []
            for position in range(count):
                stride = 2 if stage > 0 and position == 0 else 1
                block = _make_block(in_planes, width, stride, bottleneck, preactivation)
                blocks.append(block)
                in_planes = width * block.expansion
            setattr(self, self.stage_names[stage], nn.Sequential(*blocks))

        # Pre-activation blocks end in a bare addition, so the network
        # normalises and activates once more before pooling.
        self.final_bn = nn.BatchNorm2d(in_planes) if preactivation else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def head(self, x: Tensor) -> Tensor:
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return self.fc(self.avgpool(x).flatten(1))


def _make_block(
    in_planes: int, width: int, stride: int, bottleneck: bool, preactivation: bool
) -> ResidualBlock:
    if bottleneck and preactivation:
        return PreActBottleneck(in_planes, width, stride)
    if bottleneck:
        return Bottleneck(in_planes, width, stride)
    if preactivation:
        return PreActBasicBlock(in_planes, width, stride, shortcut_type="B")
    return BasicBlock(in_planes, width, stride, shortcut_type="B")
