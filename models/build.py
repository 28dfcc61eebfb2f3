"""Build a network from a manifest entry or a user's checkpoint, and load weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.manifest import ModelSpec
from models.network import ResidualNetwork
from models.resnet_cifar import CifarResNet, PreActCifarResNet
from models.resnet_imagenet import ImageNetResNet


def build_network(
    family: str, depth: int, preactivation: bool = False, num_classes: int | None = None
) -> ResidualNetwork:
    """An untrained network of the given family ("cifar" or "imagenet")."""
    if family == "cifar":
        classes = num_classes if num_classes is not None else 10
        if preactivation:
            return PreActCifarResNet(depth, classes)
        return CifarResNet(depth, classes)
    if family == "imagenet":
        classes = num_classes if num_classes is not None else 1000
        return ImageNetResNet(depth, classes, preactivation=preactivation)
    raise ValueError(f"unknown family {family!r}: expected 'cifar' or 'imagenet'")


def build_from_spec(spec: ModelSpec, num_classes: int | None = None) -> ResidualNetwork:
    classes = num_classes if num_classes is not None else len(spec.labels())
    return build_network(spec.family, spec.depth, spec.preactivation, classes)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Parameters from a CIFAR-style (`{"state_dict": ...}`, `module.` keys) or
    torchvision-style (a bare state dict) checkpoint."""
    checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds no state dict ({type(checkpoint).__name__})")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def load_weights(network: ResidualNetwork, path: Path) -> ResidualNetwork:
    """Load a checkpoint with `strict=True`; a mismatch names the bad keys."""
    network.load_state_dict(read_state_dict(path), strict=True)
    return network.eval()
