"""Ask every model about one image at once, and hand back each answer as it arrives.

No Streamlit here: the page draws each answer in its own place as this yields it. The
requests run on worker threads (they only wait on the network); the caller's thread, the
Streamlit script's, does all the drawing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from frontend.client import BackendError, Prediction
from frontend.messages import Plain, explain


@dataclass(frozen=True)
class ModelAnswer:
    """One model's answer, or its own error, and how long the round trip took."""

    model: str
    prediction: Prediction | None = None
    error: Plain | None = None
    round_trip_ms: float = 0.0


def ask_all(models: list[str], ask: Callable[[str], Prediction]) -> Iterator[ModelAnswer]:
    """`ask(model)` for every model in parallel; answers in the order they come back.

    A model that fails gives its error as its answer: the others are not held up or hidden.
    Anything but a BackendError is a bug in the page and propagates.
    """
    # One thread per model: the point is that the slowest model sets the wait, not the sum.
    with ThreadPoolExecutor(max_workers=max(1, len(models)), thread_name_prefix="compare") as pool:
        futures = [pool.submit(_timed, model, ask) for model in models]
        for future in as_completed(futures):
            yield future.result()


def _timed(model: str, ask: Callable[[str], Prediction]) -> ModelAnswer:
    start = time.perf_counter()
    try:
        prediction = ask(model)
    except BackendError as exc:
        return ModelAnswer(model, error=explain(exc), round_trip_ms=_since(start))
    return ModelAnswer(model, prediction=prediction, round_trip_ms=_since(start))


def _since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
