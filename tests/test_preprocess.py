"""The runtime's preprocessing (Pillow + numpy) against torchvision's own transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms.functional import _compute_resized_output_size

from backend.imaging import ImagePolicy, decode_image
from runtime.preprocess import Preprocessing
from weights.catalog import load_catalog

# Every distinct preset of the catalog (resize/crop/interpolation), and the tests' override.
CATALOG = load_catalog()
ENTRIES = {
    "resnet152": CATALOG.entry("resnet152"),  # 232 -> 224 bilinear (V2 recipe)
    "swin_b": CATALOG.entry("swin_b"),  # 238 -> 224 bicubic
    "vgg16": CATALOG.entry("vgg16"),  # 256 -> 224 bilinear
    "efficientnet_b0": CATALOG.entry("efficientnet_b0"),  # 256 -> 224 bicubic
    "resnet18_timm": CATALOG.entry("resnet18_timm"),  # the catalog's own override
}

# (width, height, mode): tiny, huge, square, strips, off-by-one around resize and crop, and
# every mode the intake converts from.
IMAGES = [
    (1, 1, "RGB"), (2, 3, "L"), (31, 17, "P"), (224, 224, "RGB"), (225, 224, "RGBA"),
    (232, 232, "RGB"), (233, 231, "LA"), (238, 239, "CMYK"), (255, 257, "RGB"),
    (300, 200, "RGB"), (200, 300, "1"), (513, 257, "YCbCr"), (640, 480, "RGB"),
    (480, 640, "P"), (1000, 75, "RGB"), (75, 1000, "L"), (999, 999, "RGB"),
    (1920, 1080, "RGB"), (1080, 1920, "RGBA"), (101, 333, "I;16"), (4000, 3000, "RGB"),
    (37, 61, "RGBA"),
]  # fmt: skip


def _picture(width: int, height: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-20, 21, (height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8), "RGB")
    if mode == "I;16":  # 16-bit greyscale: the intake scales it, not clips it
        return image.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
    return image.convert(mode)


def _decoded(image: Image.Image) -> Image.Image:
    """The image as the backend sees it: encoded, then decoded by its own intake to RGB."""
    buffer = io.BytesIO()
    fmt = "JPEG" if image.mode in ("CMYK", "YCbCr") else "PNG"
    image.save(buffer, fmt)
    return decode_image(buffer.getvalue(), ImagePolicy())


@pytest.mark.parametrize("model", ENTRIES)
def test_runtime_preprocessing_equals_torchvisions_transforms(model):
    entry = ENTRIES[model]
    ours, reference = entry.runtime_preprocessing(), entry.transforms()
    worst = 0.0
    for seed, (width, height, mode) in enumerate(IMAGES):
        image = _decoded(_picture(width, height, mode, seed))
        expected = reference(image).numpy()
        got = ours.tensor(image)
        assert got.shape == expected.shape == (3, ours.crop, ours.crop)
        assert got.dtype == np.float32
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst <= 1e-6, f"{model}: worst difference {worst:.2e}"


def test_the_tests_override_is_honoured(weights_origin):
    entry = weights_origin.catalog.entry("resnet18_timm")  # 128 -> 112 bicubic
    ours = entry.runtime_preprocessing()
    assert (ours.resize, ours.crop, ours.interpolation) == (128, 112, "bicubic")
    image = _decoded(_picture(301, 199, "RGB", 0))
    assert np.abs(ours.tensor(image) - entry.transforms()(image).numpy()).max() <= 1e-6


@pytest.mark.parametrize(("width", "height"), [(w, h) for w, h, _ in IMAGES])
def test_resized_size_is_torchvisions(width, height):
    expected_h, expected_w = _compute_resized_output_size((height, width), [232])
    assert Preprocessing(resize=232, crop=224).resized_size(width, height) == (
        expected_w,
        expected_h,
    )


def test_a_batch_stacks_the_images_contiguously():
    prep = Preprocessing(resize=64, crop=56)
    images = [_picture(100, 80, "RGB", 1), _picture(50, 90, "RGB", 2)]
    batch = prep.batch(images)
    assert batch.shape == (2, 3, 56, 56) and batch.flags["C_CONTIGUOUS"]
    assert np.array_equal(batch[1], prep.tensor(images[1]))


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"resize": 200, "crop": 224}, "at most resize"),
        ({"resize": 256, "crop": 224, "interpolation": "lanczos"}, "interpolation"),
        ({"resize": 256, "crop": 224, "std": (0.2, 0.0, 0.2)}, "std"),
    ],
)
def test_impossible_preprocessing_is_refused(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        Preprocessing(**kwargs)


def test_only_rgb_is_accepted():
    with pytest.raises(ValueError, match="RGB"):
        Preprocessing(resize=64, crop=56).tensor(Image.new("L", (80, 80)))
