"""A labelled image folder (one subfolder per class), decoded once into tensors."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.manifest import Preprocessing
from models.preprocessing import decode_and_preprocess

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

#: Called with (images decoded so far, total images).
ProgressCallback = Callable[[int, int], None]


class FolderLayoutError(ValueError):
    """The image folder's class subfolders cannot be matched to the model's labels."""


@dataclass
class LabelledImages:
    """Preprocessed inputs [N, 3, H, W], their label indices, and where they came from."""

    inputs: np.ndarray
    labels: np.ndarray
    paths: list[Path]


def list_folder(root: Path, class_names: list[str], limit: int | None = None
                ) -> tuple[list[Path], list[int]]:
    """Image paths and label indices of an ImageFolder-style tree.

    A subfolder named like one of the model's labels gets that label's index;
    when the names do not all match, subfolders sorted by name give 0, 1, ...
    (the ImageFolder convention), which needs one subfolder per class.
    `limit` keeps the first N images per class.

    Raises:
        FolderLayoutError: no subfolders, or subfolders that are neither the
            model's labels nor as many as its classes (every error figure
            would then be meaningless).
    """
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise FolderLayoutError(f"{root} has no class subfolders")
    by_name = {name: index for index, name in enumerate(class_names)}
    named = all(folder.name in by_name for folder in folders)
    if not named and len(folders) != len(class_names):
        shown = ", ".join(folder.name for folder in folders[:5])
        raise FolderLayoutError(
            f"{root} has {len(folders)} subfolders ({shown}{', ...' if len(folders) > 5 else ''})"
            f": they are neither among the model's labels nor one per each of its "
            f"{len(class_names)} classes"
        )

    paths: list[Path] = []
    labels: list[int] = []
    for position, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:limit] if limit is not None else files
        paths += files
        labels += [by_name[folder.name] if named else position] * len(files)
    return paths, labels


def load_folder(
    root: Path,
    spec: Preprocessing,
    class_names: list[str],
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
    workers: int = 2,
) -> LabelledImages:
    """Decode and preprocess every image once, with the service's own function."""
    paths, labels = list_folder(root, class_names, limit)
    inputs = np.empty((len(paths), 3, spec.input_size, spec.input_size), dtype=np.float32)

    def decode(index: int) -> int:
        inputs[index] = decode_and_preprocess(paths[index].read_bytes(), spec)
        return index

    # Decoding is C code that releases the GIL: a few threads go faster.
    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(decode, range(len(paths))), start=1):
            if progress is not None and (done % 250 == 0 or done == len(paths)):
                progress(done, len(paths))
    return LabelledImages(inputs, np.asarray(labels, dtype=np.int64), paths)
