"""The image sets an int8 entry is baked with: calibration images and a labelled validation set.

Calibration: a directory (every image under it) or a glob pattern (`**` reaches sub-folders).
Validation: torchvision's ImageFolder layout, one sub-directory per label, as users keep their
held-out images anyway; each sub-directory's name must be one of the entry's labels (a label
with no sub-directory is allowed: it is simply not measured). Images are files with one of
torchvision's image extensions (`IMG_EXTENSIONS`); other files are ignored.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset


class ImageSetError(ValueError):
    """An image set is missing, empty or labelled wrong; the message says which and how."""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS


def calibration_images(spec: str) -> list[Path]:
    """The calibration images `spec` names, in a stable order."""
    if any(c in spec for c in "*?["):  # a pattern, as glob reads it
        found = sorted(p for p in map(Path, glob.glob(spec, recursive=True)) if _is_image(p))
        where = f"the pattern {spec}"
    else:
        directory = Path(spec)
        if not directory.is_dir():
            raise ImageSetError(
                f"calibration set {directory} is not a directory: give a directory of images "
                "or a glob pattern (relative paths start at the catalog's folder)"
            )
        found = sorted(p for p in directory.rglob("*") if _is_image(p))
        where = str(directory)
    if not found:
        raise ImageSetError(
            f"calibration set {where} holds no images ({', '.join(IMG_EXTENSIONS)}): "
            "add a few hundred images like those the model will serve"
        )
    return found


def validation_images(spec: str, labels: list[str]) -> list[tuple[Path, int]]:
    """(image, index of its label among `labels`) for every image of the validation set."""
    directory = Path(spec)
    if not directory.is_dir():
        raise ImageSetError(
            f"validation set {directory} is not a directory: give one with a sub-directory "
            "per label (torchvision's ImageFolder layout)"
        )
    try:
        classes, _ = find_classes(directory)
    except FileNotFoundError:
        classes = []
    if not classes:
        raise ImageSetError(
            f"validation set {directory} has no sub-directories: put each labelled image in "
            f"the sub-directory named after its label ({', '.join(labels[:5])}...)"
        )
    unknown = [name for name in classes if name not in labels]
    if unknown:
        raise ImageSetError(
            f"validation set {directory} has sub-directories {unknown} that are not labels of "
            f"this model; its labels are {labels[:20]}"
        )
    index = {label: labels.index(label) for label in classes}
    found = make_dataset(directory, index, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not found:
        raise ImageSetError(
            f"validation set {directory} holds no images ({', '.join(IMG_EXTENSIONS)}) in its "
            f"sub-directories {classes}"
        )
    return [(Path(path), label) for path, label in found]


def digest(paths: list[Path]) -> str:
    """One sha256 over the images' labels, names and bytes: a changed set makes a new bundle."""
    total = hashlib.sha256()
    for path in paths:
        total.update(f"{path.parent.name}/{path.name}\0".encode())  # the label too
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()
