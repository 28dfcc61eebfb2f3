"""Fetch and export known models into the repository (needs PyTorch)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.build import build_from_spec, build_network, load_weights
from models.export import ExportSource, write_model
from models.manifest import ModelSpec, Preprocessing, get_spec, read_labels
from models.repository import list_versions
from models.weights import ProgressCallback, fetch_weights, sha256_of

RANDOM_INIT_SEED = 0


def export_known_model(
    name: str,
    repository: Path,
    *,
    version: int = 1,
    random_init: bool = False,
    cache_dir: Path | None = None,
    mirror: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch a manifest model's weights (or initialise randomly) and export it.

    Raises:
        KeyError: `name` is not in the manifest.
        models.weights.WeightsError: weights are unpublished and `random_init`
            is False, or the download failed its checks.
    """
    spec = get_spec(name)
    if random_init:
        torch.manual_seed(RANDOM_INIT_SEED)
        network = build_from_spec(spec)
        source = ExportSource(kind="random-init")
    else:
        weights_path = fetch_weights(spec, cache_dir, mirror, progress)
        network = load_weights(build_from_spec(spec), weights_path)
        assert spec.weights is not None
        source = ExportSource(
            kind="published",
            url=spec.weights.url,
            file=spec.weights.file_name,
            sha256=sha256_of(weights_path),
            licence=spec.weights.licence,
        )
    return write_model(
        network.eval(), repository, name=name, version=version, dataset=spec.dataset,
        labels=spec.labels(), preprocessing=spec.preprocessing, source=source,
        description=spec.description,
    )


def export_checkpoint(
    checkpoint: Path,
    repository: Path,
    *,
    name: str,
    family: str,
    depth: int,
    labels_file: Path,
    preactivation: bool = False,
    version: int = 1,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Export a user's own trained ResNet (CIFAR-style or torchvision-style)."""
    labels = read_labels(labels_file)
    network = build_network(family, depth, preactivation, num_classes=len(labels))
    load_weights(network, checkpoint)
    template: ModelSpec = get_spec(
        "resnet20-cifar10" if family == "cifar" else "resnet50-imagenet"
    )
    source = ExportSource(kind="checkpoint", file=checkpoint.name, sha256=sha256_of(checkpoint))
    return write_model(
        network.eval(), repository, name=name, version=version, dataset="custom",
        labels=labels, preprocessing=preprocessing or template.preprocessing,
        source=source, description=f"user checkpoint {checkpoint.name}",
    )


def ensure_models(
    names: list[str],
    repository: Path,
    *,
    random_init: bool = False,
    cache_dir: Path | None = None,
    mirror: str | None = None,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Export each named model that has no version in the repository yet."""
    folders = []
    for name in names:
        if list_versions(repository, name):
            continue
        folders.append(
            export_known_model(
                name, repository, random_init=random_init, cache_dir=cache_dir,
                mirror=mirror, progress=progress,
            )
        )
    return folders
