"""The models this project knows how to build, where their weights live, how to feed them.

Pure data, importable without PyTorch. Only the four CIFAR-10 files mirrored in
`../shared/weights/cifar10/` could be hashed here; for the other published
files the manifest keeps the hash prefix that the publisher puts in the file
name, which the fetch step checks, and marks them `verified_here=False`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LABELS_DIR = Path(__file__).parent / "labels"

CIFAR10_URL = (
    "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
)
TORCHVISION_URL = "https://download.pytorch.org/models/"

# Both datasets' published weights were trained on inputs normalised with the
# ImageNet channel statistics (see ../shared/README.md for the CIFAR ones).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    `resize` is the shorter side to resize to (or, when `crop` is None, the
    exact square size); `crop` the centre crop. Pixels are scaled to [0, 1],
    then normalised with `mean` and `std` per channel.
    """

    resize: int
    crop: int | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    @property
    def input_size(self) -> int:
        return self.crop if self.crop is not None else self.resize

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CIFAR_PREPROCESSING = Preprocessing(resize=32, crop=None)
IMAGENET_PREPROCESSING = Preprocessing(resize=256, crop=224)


@dataclass(frozen=True)
class Weights:
    """A published weights file: `url` is the publisher's own address."""

    url: str
    sha256: str
    verified_here: bool
    licence: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the manifest."""

    name: str
    family: str  # "cifar" or "imagenet"
    depth: int
    preactivation: bool
    dataset: str
    labels_file: str
    preprocessing: Preprocessing
    weights: Weights | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        prefix = "preact-" if self.preactivation else ""
        return f"{prefix}resnet{self.depth}"

    def labels(self) -> list[str]:
        return read_labels(LABELS_DIR / self.labels_file)


def read_labels(path: Path) -> list[str]:
    """One label per line, blank lines ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _cifar_weights(file_name: str, sha256: str, verified: bool) -> Weights:
    return Weights(CIFAR10_URL + file_name, sha256, verified, "BSD-2-Clause")


def _torchvision_weights(file_name: str) -> Weights:
    prefix = file_name.rsplit("-", 1)[1].split(".")[0]
    return Weights(TORCHVISION_URL + file_name, prefix, False, "BSD-3-Clause")


_CIFAR_PUBLISHED = {
    20: ("resnet20-12fca82f.th",
         "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", True),
    32: ("resnet32-d509ac18.th",
         "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", True),
    44: ("resnet44-014dd654.th",
         "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", True),
    56: ("resnet56-4bfd9763.th",
         "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", True),
    110: ("resnet110-1d1ed7c2.th", "1d1ed7c2", False),
    1202: ("resnet1202-f3b1deed.th", "f3b1deed", False),
}

_TORCHVISION_PUBLISHED = {
    18: "resnet18-f37072fd.pth",
    34: "resnet34-b627a593.pth",
    50: "resnet50-0676ba61.pth",
    101: "resnet101-63fe2227.pth",
    152: "resnet152-394f9c45.pth",
}


def _build_manifest() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    for depth, (file_name, digest, verified) in _CIFAR_PUBLISHED.items():
        specs.append(ModelSpec(
            name=f"resnet{depth}-cifar10", family="cifar", depth=depth,
            preactivation=False, dataset="cifar10", labels_file="cifar10.txt",
            preprocessing=CIFAR_PREPROCESSING,
            weights=_cifar_weights(file_name, digest, verified),
            description=f"ResNet-{depth} for CIFAR-10 (He et al. 2015, option A)",
        ))
    for depth in (20, 32, 44, 56, 110):
        specs.append(ModelSpec(
            name=f"preact-resnet{depth}-cifar10", family="cifar", depth=depth,
            preactivation=True, dataset="cifar10", labels_file="cifar10.txt",
            preprocessing=CIFAR_PREPROCESSING,
            description=f"Pre-activation ResNet-{depth} for CIFAR-10 (He et al. 2016); "
            "no published weights, random initialisation only",
        ))
    for depth, file_name in _TORCHVISION_PUBLISHED.items():
        specs.append(ModelSpec(
            name=f"resnet{depth}-imagenet", family="imagenet", depth=depth,
            preactivation=False, dataset="imagenet", labels_file="imagenet1k.txt",
            preprocessing=IMAGENET_PREPROCESSING,
            weights=_torchvision_weights(file_name),
            description=f"ResNet-{depth} for ImageNet-1k (torchvision IMAGENET1K_V1)",
        ))
        specs.append(ModelSpec(
            name=f"preact-resnet{depth}-imagenet", family="imagenet", depth=depth,
            preactivation=True, dataset="imagenet", labels_file="imagenet1k.txt",
            preprocessing=IMAGENET_PREPROCESSING,
            description=f"Pre-activation ResNet-{depth} for ImageNet-1k (He et al. "
            "2016); no published weights, random initialisation only",
        ))
    return {spec.name: spec for spec in specs}


MANIFEST: dict[str, ModelSpec] = _build_manifest()


def get_spec(name: str) -> ModelSpec:
    """The manifest entry for `name`; KeyError names the known models."""
    try:
        return MANIFEST[name]
    except KeyError:
        known = ", ".join(sorted(MANIFEST))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
