"""Generated images a bundle is verified on: odd sizes, aspect ratios and modes, reproducible.

Real photos cannot be shipped or downloaded here, and noise alone exercises little of a
model: these are smooth random scenes (gradients, blobs, stripes, a little grain) drawn at a
low resolution and scaled up, each stored in a different Pillow mode and converted back to
RGB, as the backend's intake converts uploads.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# (width, height, mode): square, landscape, portrait, strips, tiny and large, every mode the
# intake converts from. The first is also the bundle's reference image.
SHAPES = (
    (320, 240, "RGB"),
    (224, 224, "RGB"),
    (640, 480, "P"),
    (301, 199, "L"),
    (199, 301, "RGBA"),
    (1000, 75, "RGB"),
    (33, 47, "CMYK"),
    (257, 1024, "1"),
    (480, 640, "LA"),
    (777, 555, "YCbCr"),
)


def probe_images(seed: int = 0) -> list[Image.Image]:
    """The verification images, as RGB PIL images (the same ones on every run)."""
    rng = np.random.default_rng(seed)
    return [
        _scene(rng, width, height).convert(mode).convert("RGB") for width, height, mode in SHAPES
    ]


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    small_w, small_h = max(2, width // 16), max(2, height // 16)
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float64)
    channels = []
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        plane = np.cos(angle) * x / small_w + np.sin(angle) * y / small_h
        for _ in range(3):  # soft blobs
            cx, cy, r = rng.uniform(0, small_w), rng.uniform(0, small_h), rng.uniform(1, 6)
            plane += rng.uniform(-1, 1) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        plane += 0.3 * np.sin(x * rng.uniform(0.2, 1.5))  # stripes
        channels.append(plane)
    scene = np.stack(channels, axis=-1)
    scene = (scene - scene.min()) / max(float(np.ptp(scene)), 1e-9)
    image = Image.fromarray((scene * 255).astype(np.uint8), "RGB")
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 6, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
