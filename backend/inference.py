"""Pure inference: preprocess -> forward -> postprocess, with per-stage timings.

No Flask here: `predict` takes a decoded RGB image and a served model and returns plain
data. The tensor work runs on a small pool of dedicated inference threads
(INFERENCE_CONCURRENCY, default 1), never on the request threads:
- it bounds how many forward passes run at once, so concurrent requests don't
  oversubscribe the cores (each forward already uses `torch_threads`);
- PyTorch's OpenMP keeps one thread team per calling thread; spread over gunicorn's 8
  request threads, 8 teams would each start cold and spin against each other
  (measured: /predict 1.37x the bare forward that way, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from PIL import Image

from weights.store import LoadedModel


@dataclass
class ServedModel:
    """A loaded model with what a request needs: labels, preprocessing, its runner."""

    loaded: LoadedModel
    runner: ThreadPoolExecutor  # the inference threads, shared by every model
    channels_last: bool = False
    categories: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.categories = self.loaded.entry.categories
        self.transforms = self.loaded.entry.transforms()
        if self.channels_last:
            self.loaded.module.to(memory_format=torch.channels_last)

    @property
    def id(self) -> str:
        return self.loaded.entry.id

    @property
    def input_size(self) -> int:
        return self.loaded.entry.input_size


@dataclass(frozen=True)
class Prediction:
    model: str
    top: list[dict]
    timings_ms: dict[str, float]

    def to_json(self, timings_ms: dict[str, float] | None = None) -> dict:
        """The response body; `timings_ms` replaces the inference-only timings if given."""
        return {
            "model": self.model,
            "category": self.top[0]["label"],
            "predictions": self.top,
            "timings_ms": timings_ms if timings_ms is not None else self.timings_ms,
        }


def predict(image: Image.Image, served: ServedModel, top_k: int) -> Prediction:
    """The top-k ImageNet classes of `image` under `served`, best first."""
    timings: dict[str, float] = {}
    submitted = time.perf_counter()

    def work() -> list[dict]:  # runs on an inference thread
        timings["queue"] = ms_since(submitted)
        start = time.perf_counter()
        batch = served.transforms(image).unsqueeze(0)
        if served.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        timings["preprocess"] = ms_since(start)

        start = time.perf_counter()
        with torch.inference_mode():
            logits = served.loaded.module(batch)
        timings["forward"] = ms_since(start)

        start = time.perf_counter()
        probabilities = torch.softmax(logits[0].float(), dim=0)
        values, indices = torch.topk(probabilities, k=min(top_k, probabilities.numel()))
        top = [
            {"label": served.categories[i], "index": i, "probability": round(float(p), 6)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        timings["postprocess"] = ms_since(start)
        return top

    top = served.runner.submit(work).result()
    return Prediction(model=served.id, top=top, timings_ms=timings)


def warm_up(served: ServedModel) -> float:
    """Run one forward pass on a blank image (allocates buffers, picks kernels); ms taken."""
    start = time.perf_counter()
    size = served.input_size
    predict(Image.new("RGB", (size, size), (128, 128, 128)), served, top_k=1)
    return ms_since(start)


def ms_since(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter() reading), rounded."""
    return round((time.perf_counter() - start) * 1000, 2)
