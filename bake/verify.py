"""The exported graph under ONNX Runtime against torchvision's eager model, image by image.

Each side runs its own whole pipeline on the same RGB images: torchvision's
`weights.transforms()` and the eager module on one side, the runtime's preprocessing
(runtime/preprocess.py) and the ONNX Runtime session on the other. So a difference in the
preprocessing fails the build as surely as a difference in the graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from runtime.session import ModelSession, softmax

TOLERANCE = 1e-4  # on any probability; float32 graphs agree to ~1e-6
TOP = 5


class VerificationError(RuntimeError):
    """The compiled model does not answer as torchvision's does; the message has the figures."""


@dataclass(frozen=True)
class Verification:
    """What the check found: the figures the manifest records."""

    images: int
    worst_probability_difference: float
    worst_logit_difference: float
    top5_positions_checked: int
    tolerance: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "worst_probability_difference": self.worst_probability_difference,
            "worst_logit_difference": self.worst_logit_difference,
            "top5_positions_checked": self.top5_positions_checked,
            "tolerance": self.tolerance,
            "seconds": self.seconds,
        }


def verify(
    model_id: str,
    module: torch.nn.Module,
    transforms,
    session: ModelSession,
    images: list[Image.Image],
    tolerance: float = TOLERANCE,
) -> tuple[Verification, np.ndarray]:
    """Compare both pipelines on `images`; give the figures and the session's probabilities.

    The whole set goes through ONNX Runtime as one batch, which also proves the dynamic batch
    dimension. Raises VerificationError naming the model, the images and the figures.
    """
    started = time.perf_counter()
    with torch.inference_mode():
        eager_logits = module(torch.stack([transforms(image) for image in images])).numpy()
    logits = session.logits(session.preprocess(images))
    if logits.shape != eager_logits.shape:
        raise VerificationError(
            f"{model_id}: the ONNX graph answers with shape {logits.shape}, "
            f"torchvision's model with {eager_logits.shape}"
        )
    if not (np.isfinite(eager_logits).all() and np.isfinite(logits).all()):
        # NaN compares false with everything: without this, NaNs on both sides would pass.
        side = "torchvision's model" if not np.isfinite(eager_logits).all() else "the ONNX graph"
        raise VerificationError(
            f"{model_id}: {side} answers with non-finite values (NaN or infinity). "
            "No bundle was written."
        )
    eager, served = softmax(eager_logits), softmax(logits)
    differences = np.abs(eager - served).max(axis=1)
    checked, reordered = _compare_top(eager, served, tolerance)
    seconds = time.perf_counter() - started
    worst = int(np.argmax(differences))
    if not differences[worst] <= tolerance or reordered:
        described = ", ".join(
            f"{i} ({w}x{h})" for i, (w, h) in ((i, images[i].size) for i in reordered)
        )
        raise VerificationError(
            f"{model_id}: the compiled model does not answer as torchvision's: worst probability "
            f"difference {differences[worst]:.3e} on image {worst} {images[worst].size} "
            f"(tolerance {tolerance:g})"
            + (f"; the top-{TOP} classes differ on images {described}" if reordered else "")
            + ". No bundle was written."
        )
    return (
        Verification(
            images=len(images),
            worst_probability_difference=float(differences.max()),
            worst_logit_difference=float(np.abs(eager_logits - logits).max()),
            top5_positions_checked=checked,
            tolerance=tolerance,
            seconds=round(seconds, 2),
        ),
        served,
    )


def _compare_top(eager: np.ndarray, served: np.ndarray, tolerance: float) -> tuple[int, list[int]]:
    """Positions of torchvision's top-5 that are separable, and the images where they moved.

    A position is separable when its probability is more than `tolerance` away from both of
    its neighbours: there, rounding cannot swap two classes, so the same class must hold it.
    """
    checked, reordered = 0, []
    for row, (want, got) in enumerate(zip(eager, served, strict=True)):
        order = np.argsort(-want, kind="stable")[: TOP + 1]
        got_order = np.argsort(-got, kind="stable")[:TOP]
        for position in range(min(TOP, len(want))):  # a user's model may have fewer classes
            above = want[order[position - 1]] - want[order[position]] if position else np.inf
            below = (
                want[order[position]] - want[order[position + 1]]
                if position + 1 < len(order)
                else np.inf
            )
            if min(above, below) > tolerance:
                checked += 1
                if got_order[position] != order[position]:
                    reordered.append(row)
                    break
    return checked, reordered
