"""Preprocessing in Pillow and numpy, equal to torchvision's `weights.transforms()` on PIL images.

torchvision's ImageNet presets (`ImageClassification`, and the `Resize -> CenterCrop ->
PILToTensor -> ToDtype -> Normalize` pipeline a catalog entry may give instead) do, for a PIL
image:
1. resize so the shorter side is `resize` pixels, the longer one `int(resize * long / short)`,
   with Pillow's own `Image.resize` and the weights' interpolation (Pillow always antialiases);
2. crop `crop` x `crop` from the centre, the corner at `int(round((size - crop) / 2))` on each
   axis (Python's round: halves go to the even number);
3. scale 0..255 to 0..1 in float32, subtract the mean and divide by the standard deviation.
The same steps here, with the same Pillow calls, give the same tensor (tests/test_preprocess.py
compares them on odd sizes and modes) without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes a model's input: resize, centre crop, scale, normalise."""

    resize: int
    crop: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        # Normalise lists (JSON, TOML) to tuples so equal settings compare equal.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {sorted(INTERPOLATIONS)}"
            )
        if not 0 < self.crop <= self.resize:
            # The shorter side is `resize` after step 1, so a crop no larger never needs the
            # padding torchvision would add.
            raise ValueError(
                f"crop ({self.crop}) must be positive and at most resize ({self.resize})"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise ValueError("mean and std need three values each, std positive")

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) after step 1 (torchvision's `_compute_resized_output_size`)."""
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def tensor(self, image: Image.Image) -> np.ndarray:
        """One RGB image as a (3, crop, crop) float32 array."""
        if image.mode != "RGB":
            raise ValueError(f"preprocessing takes RGB images, not {image.mode}")
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, INTERPOLATIONS[self.interpolation])
        width, height = image.size
        top = round((height - self.crop) / 2.0)  # banker's rounding, as torchvision
        left = round((width - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Images as one contiguous (N, 3, crop, crop) float32 batch."""
        return np.ascontiguousarray(np.stack([self.tensor(image) for image in images]))
