"""A real classifier trained in the tests: a resnet18 on four classes of generated pictures.

What a user brings (README, "Your own classifier"): a torchvision architecture fine-tuned on
their own classes, saved as a state dict, with a label list. The classes are drawn shapes
(a disc, a square, stripes, a cross) in their own colour range, placed and sized at random on
noisy backgrounds: easy enough to learn on two CPU cores in well under a minute, varied enough
that only a model that learnt them answers held-out pictures right.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.models import get_model
from torchvision.transforms import v2 as T

LABELS = ["disc", "square", "stripes", "cross"]
SIZE = 48  # pixels: the model's input (resize = crop), small so training is quick
PREPROCESSING = {"resize": SIZE, "crop": SIZE, "interpolation": "bilinear"}
# Each class's base colour (RGB); the drawn colour varies around it.
_COLOURS = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 30)]


def picture(label: int, rng: np.random.Generator) -> Image.Image:
    """One picture of class `label`: its shape in its colour range, anywhere, any size."""
    width, height = (int(v) for v in rng.integers(72, 160, size=2))
    background = rng.normal(rng.uniform(60, 190), 25, (height, width, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in _COLOURS[label])
    side = int(rng.uniform(0.55, 0.9) * min(width, height))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    box = (x0, y0, x0 + side, y0 + side)
    if label == 0:
        draw.ellipse(box, fill=colour)
    elif label == 1:
        draw.rectangle(box, fill=colour)
    elif label == 2:
        band = max(2, side // 8)
        for y in range(y0, y0 + side, 2 * band):
            draw.rectangle((x0, y, x0 + side, y + band), fill=colour)
    else:
        third = side // 3
        draw.rectangle((x0 + third, y0, x0 + 2 * third, y0 + side), fill=colour)
        draw.rectangle((x0, y0 + third, x0 + side, y0 + 2 * third), fill=colour)
    return image


def pictures(count: int, seed: int) -> list[tuple[Image.Image, int]]:
    """`count` labelled pictures, the classes in turn (reproducible from `seed`)."""
    rng = np.random.default_rng(seed)
    return [(picture(i % len(LABELS), rng), i % len(LABELS)) for i in range(count)]


def write_image_sets(root: Path, *, calibration: int = 64, validation: int = 200) -> Path:
    """An int8 entry's image sets under `root`: `calibration/` (unlabelled pictures) and
    `validation/<label>/` (the held-out pictures, seed 1), as PNG; `root` back."""
    for number, (image, _) in enumerate(pictures(calibration, seed=4)):
        (root / "calibration").mkdir(parents=True, exist_ok=True)
        image.save(root / "calibration" / f"{number:04d}.png")
    for number, (image, label) in enumerate(pictures(validation, seed=1)):
        folder = root / "validation" / LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{number:04d}.png")
    return root


def transforms(size: int = SIZE):
    """What the catalog entry's `preprocessing` says, as torchvision does it (the reference)."""
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(size),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )


@dataclass(frozen=True)
class Trained:
    state_dict: dict[str, torch.Tensor]
    seconds: float
    final_loss: float


def train(images: int = 1200, steps: int = 300, seed: int = 0, size: int = SIZE) -> Trained:
    """A resnet18 with a 4-way head fitted to generated pictures; give its state dict.

    `size`: the input it is fitted at (resize = crop); benchmarks/int8.py fits it at 224.

    No pretrained weights can be downloaded here, and training a whole resnet18 from scratch
    takes minutes on two shared cores. So, as in fine-tuning with a frozen backbone: a seeded
    random backbone whose BatchNorm statistics are measured on the training pictures (random
    convolutions make good features for shapes and colours), and the head trained on the
    pooled features, computed once. The result is an ordinary state dict of the architecture.
    """
    torch.manual_seed(seed)
    started = time.perf_counter()
    prepare = transforms(size)
    data = pictures(images, seed=seed)
    inputs = torch.stack([prepare(image) for image, _ in data])
    targets = torch.tensor([label for _, label in data])
    model = get_model("resnet18", weights=None, num_classes=len(LABELS))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the batches below
        model.train()
        for batch in inputs[:300].split(100):  # enough for the statistics
            model(batch)
        model.eval()
        head, model.fc = model.fc, torch.nn.Identity()
        features = torch.cat([model(batch) for batch in inputs.split(100)])
        model.fc = head
    mean, std = features.mean(dim=0), features.std(dim=0) + 1e-6
    scaled = torch.nn.Linear(features.shape[1], len(LABELS))
    optimiser = torch.optim.AdamW(scaled.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(scaled((features - mean) / std), targets)
        loss.backward()
        optimiser.step()
    with torch.no_grad():  # fold the feature scaling into the head: fc(x) = scaled((x - m) / s)
        head.weight.copy_(scaled.weight / std)
        head.bias.copy_(scaled.bias - (scaled.weight * (mean / std)).sum(dim=1))
    return Trained(model.state_dict(), time.perf_counter() - started, loss.item())


@functools.cache
def fitted() -> Trained:
    """The model `train()` gives, fitted once per test session (tests share it, read-only)."""
    return train()


def save(trained: Trained, path: Path) -> Path:
    """Save as most training scripts do: a plain state dict with torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trained.state_dict, path)
    return path


if __name__ == "__main__":  # figures: uv run python -m tests.trained
    torch.set_num_threads(2)
    trained = train()
    model = get_model("resnet18", weights=None, num_classes=len(LABELS))
    model.load_state_dict(trained.state_dict)
    held_out = pictures(200, seed=1)
    with torch.inference_mode():
        batch = torch.stack([transforms()(image) for image, _ in held_out])
        guesses = model.eval()(batch).argmax(dim=1).tolist()
    right = sum(g == label for g, (_, label) in zip(guesses, held_out, strict=True))
    print(
        f"trained in {trained.seconds:.1f} s, last loss {trained.final_loss:.3f}, "
        f"held-out accuracy {right / len(held_out):.1%}"
    )
