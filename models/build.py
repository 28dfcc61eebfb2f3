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


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose parameters do not fit."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Parameters from a CIFAR-style (`{"state_dict": ...}`, `module.` keys) or
    torchvision-style (a bare state dict) checkpoint.

    Raises:
        CheckpointError: the file is not a PyTorch checkpoint or holds no
            state dict.
        OSError: the file cannot be opened.
    """
    checkpoint: Any = _load_checkpoint(path)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds no state dict ({type(checkpoint).__name__})")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _load_checkpoint(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # a missing or unreadable file is not a corrupt checkpoint
        raise
    except Exception as exc:  # torch.load raises many unrelated types on bad bytes
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {_first_cause(exc)}"
        ) from exc


def _first_cause(exc: Exception) -> str:
    """The line of torch's message that names the cause.

    Its unpickler puts the cause after paragraphs about `weights_only`, and
    its zip reader follows it with advice on filing bugs.
    """
    _, marker, cause = str(exc).partition("WeightsUnpickler error:")
    text = cause if marker else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return f"it is empty or ends early ({type(exc).__name__})"
    return lines[0].split(". ")[0].rstrip(".")


def load_weights(network: ResidualNetwork, path: Path) -> ResidualNetwork:
    """Load a checkpoint with `strict=True`.

    Raises:
        CheckpointError: the file is not a checkpoint, or its parameters do
            not fit `network` (the message names the bad keys).
        OSError: the file cannot be opened.
    """
    state = read_state_dict(path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch lists the bad keys on one line per kind of mismatch.
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        raise CheckpointError(
            f"{path} does not fit a {type(network).__name__} of this depth and "
            f"class count: {detail}"
        ) from exc
    return network.eval()
