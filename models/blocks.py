"""Residual blocks shared by the CIFAR and ImageNet families.

Every block splits into a *shortcut* path and a residual *branch*. The forward
pass takes an optional per-sample gate that multiplies the branch; this is how
the exported ONNX graph runs any sub-network: a gate of 0 leaves the shortcut
alone. `shortcut_only` computes a removed block directly, without the branch,
and is what the structural reference in `models.subnetwork` uses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling shortcut of He et al. 2015, section 4.2.

    Takes every second pixel and zero-pads the new channels evenly on both
    sides, as the published CIFAR-10 checkpoints expect.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        extra = out_planes - in_planes
        if extra < 0 or extra % 2:
            raise ValueError(
                f"option-A shortcut cannot go from {in_planes} to {out_planes} "
                "channels: the difference must be even and non-negative"
            )
        self.stride = stride
        self.pad_each_side = extra // 2

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        pad = self.pad_each_side
        return F.pad(x, (0, 0, 0, 0, pad, pad))


class ResidualBlock(nn.Module):
    """Interface of every block: a shortcut, a branch and a gate on the branch."""

    #: Channel multiplier of the block's output relative to its width.
    expansion = 1
    downsamples: bool

    def shortcut_only(self, x: Tensor) -> Tensor:
        """The block's output when it is removed: its shortcut path alone."""
        raise NotImplementedError

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def _scale(branch: Tensor, gate: Tensor | None) -> Tensor:
    return branch if gate is None else branch * gate


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions; ReLU after the addition (He et al. 2015)."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut_type: str = "B",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsamples = stride != 1 or in_planes != planes
        self.shortcut: nn.Module | None = None
        self.downsample: nn.Module | None = None

        # The CIFAR checkpoints name their (parameter-free) shortcut
        # `shortcut`; torchvision names its projection `downsample`.
        if self.downsamples and shortcut_type == "A":
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        elif self.downsamples:
            self.downsample = nn.Sequential(
                conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes)
            )

    def _identity_path(self, x: Tensor) -> Tensor:
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.downsample is not None:
            return self.downsample(x)
        return x

    def shortcut_only(self, x: Tensor) -> Tensor:
        return self.relu(self._identity_path(x))

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        branch = self.bn2(self.conv2(branch))
        return self.relu(self._identity_path(x) + _scale(branch, gate))


class Bottleneck(ResidualBlock):
    """1x1, 3x3, 1x1 convolutions with the stride on the 3x3 (torchvision's V1.5)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsamples = stride != 1
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )

    def _identity_path(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def shortcut_only(self, x: Tensor) -> Tensor:
        return self.relu(self._identity_path(x))

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        branch = self.relu(self.bn2(self.conv2(branch)))
        branch = self.bn3(self.conv3(branch))
        return self.relu(self._identity_path(x) + _scale(branch, gate))


class PreActBasicBlock(ResidualBlock):
    """BN-ReLU-conv twice, nothing after the addition (He et al. 2016).

    A projection shortcut reads the pre-activated input, so removing such a
    block still applies `bn1` and ReLU before the projection.
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        shortcut_type: str = "B",
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsamples = stride != 1 or in_planes != planes
        self.shortcut: nn.Module | None = None
        self.downsample: nn.Module | None = None
        if self.downsamples and shortcut_type == "A":
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        elif self.downsamples:
            self.downsample = nn.Sequential(conv1x1(in_planes, planes, stride))

    def _identity_path(self, x: Tensor, preact: Tensor) -> Tensor:
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.downsample is not None:
            return self.downsample(preact)
        return x

    def shortcut_only(self, x: Tensor) -> Tensor:
        if self.downsample is None:
            return self._identity_path(x, x)
        return self._identity_path(x, self.relu(self.bn1(x)))

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        preact = self.relu(self.bn1(x))
        branch = self.conv1(preact)
        branch = self.conv2(self.relu(self.bn2(branch)))
        return self._identity_path(x, preact) + _scale(branch, gate)


class PreActBottleneck(ResidualBlock):
    """Pre-activation bottleneck (He et al. 2016), stride on the 3x3."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.relu = nn.ReLU(inplace=False)
        self.downsamples = stride != 1
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(conv1x1(in_planes, out_planes, stride))

    def _identity_path(self, x: Tensor, preact: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(preact)

    def shortcut_only(self, x: Tensor) -> Tensor:
        if self.downsample is None:
            return x
        return self.downsample(self.relu(self.bn1(x)))

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        preact = self.relu(self.bn1(x))
        branch = self.conv1(preact)
        branch = self.conv2(self.relu(self.bn2(branch)))
        branch = self.conv3(self.relu(self.bn3(branch)))
        return self._identity_path(x, preact) + _scale(branch, gate)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions and unit BatchNorm, as in He et al. 2015."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.zeros_(module.bias)


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "OptionAShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResidualBlock",
    "init_weights",
]
