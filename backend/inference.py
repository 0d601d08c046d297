"""Pure inference: preprocess -> forward -> postprocess, with per-stage timings.

No Flask here: `prepare` turns a decoded RGB image into the model's input, `predict` that input
into the answer, as plain data; apart, so the caller can free the decoded pixels (and give
them back to its budget, backend.budget) before the forward pass. Preprocessing (Pillow,
numpy) runs on the request's own thread; the
forward pass runs on the registry's inference threads (INFERENCE_CONCURRENCY, default 1):
one forward at a time already uses every core (its intra-op threads), and a bounded number
of them bounds the activation memory in flight (benchmarks/RESULTS.md has the measurements).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from backend.forwards import Forwards
from runtime.session import ModelSession, top_classes


@dataclass(frozen=True)
class Answer:
    """What a prediction gives back: the last stage of a model's life."""

    model: str
    top: list[dict]
    timings_ms: dict[str, float]
    untrained: bool = False

    def to_json(self) -> dict:
        body = {
            "model": self.model,
            "category": self.top[0]["label"],
            "predictions": self.top,
            "timings_ms": self.timings_ms,
        }
        if self.untrained:
            body["untrained"] = True  # demo weights: the frontend labels the answer as such
        return body


def prepare(image: Image.Image, session: ModelSession) -> tuple[np.ndarray, float]:
    """The model input of `image` (a few hundred KB whatever the image), and its milliseconds."""
    start = time.perf_counter()
    batch = session.preprocess([image])
    return batch, ms_since(start)


def predict(
    batch: np.ndarray, session: ModelSession, top_k: int, runner: Forwards | None = None
) -> Answer:
    """The top-k ImageNet classes of a prepared one-image `batch` under `session`, best first.

    `runner` runs the forward pass (the registry's inference threads); None runs it here.
    """
    timings: dict[str, float] = {}
    submitted = time.perf_counter()

    def forward():
        timings["queue"] = ms_since(submitted)
        started = time.perf_counter()
        probabilities = session.probabilities(batch)[0]
        timings["forward"] = ms_since(started)
        return probabilities

    probabilities = runner.submit(forward).result() if runner is not None else forward()

    start = time.perf_counter()
    top = [
        {"label": session.categories[index], "index": index, "probability": round(p, 6)}
        for index, p in top_classes(probabilities, top_k)
    ]
    timings["postprocess"] = ms_since(start)
    return Answer(model=session.id, top=top, timings_ms=timings, untrained=session.untrained)


def ms_since(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter() reading), rounded."""
    return round((time.perf_counter() - start) * 1000, 2)
