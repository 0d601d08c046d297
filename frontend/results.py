"""What came of the last request, kept across reruns, and how the page draws it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import streamlit as st

from frontend import present
from frontend.client import BackendClient, BackendError, Prediction
from frontend.compare import ModelAnswer, ask_all
from frontend.sources import Query

CARDS_PER_ROW = 2  # four models in two rows: each card stays wide enough to read


@dataclass(frozen=True)
class Outcome:
    """One model's answer about one image, or what went wrong."""

    # A URL (the browser loads it) or a small preview of the sent bytes (frontend.preview);
    # None: nothing to show (a refused input, or one the page could not preview).
    image: str | bytes | None = None
    prediction: Prediction | None = None  # with `image`, or else `error`
    round_trip_ms: float = 0.0
    error: str | None = None
    input_problem: bool = False  # the input was refused before anything was sent


@dataclass(frozen=True)
class Comparison:
    """Every model's answer about one image, in the models' order."""

    image: str | bytes | None  # as Outcome.image
    models: tuple[str, ...]
    answers: tuple[ModelAnswer, ...]


def ask_one(client: BackendClient, query: Query, model: str) -> Outcome:
    """One request to the backend, timed, with any failure turned into a message."""
    start = time.perf_counter()
    try:
        with st.spinner("Classifying…"):
            prediction = query.send(client, model)
    except BackendError as exc:
        # No image with an error: the backend may have refused it as undecodable.
        return Outcome(error=str(exc))
    return Outcome(query.shown(), prediction, (time.perf_counter() - start) * 1000)


def ask_every_model(client: BackendClient, query: Query, models: list[str]) -> Comparison:
    """All the models at once; each answer is drawn the moment it arrives."""
    shown = query.shown()
    answers = draw_comparison(
        shown, models, ask_all(models, lambda model: query.send(client, model))
    )
    return Comparison(shown, tuple(models), tuple(answers[m] for m in models))


def show(outcome: Outcome | Comparison) -> None:
    if isinstance(outcome, Comparison):
        draw_comparison(outcome.image, list(outcome.models), outcome.answers)
    else:
        show_outcome(outcome)


def show_outcome(outcome: Outcome) -> None:
    if outcome.error:
        (st.warning if outcome.input_problem else st.error)(outcome.error)
    if outcome.prediction is None:
        return
    prediction = outcome.prediction
    left, right = st.columns([2, 3])
    with left:
        if outcome.image is not None:
            st.image(outcome.image, width="stretch", alt="The image that was classified")
    with right:
        st.markdown(present.headline(prediction))
        st.caption(present.provenance(prediction, outcome.round_trip_ms))
        if prediction.untrained:
            st.warning(present.UNTRAINED_NOTE)
    st.subheader(f"Top {min(present.CHART_ROWS, len(prediction.labels))}")
    st.altair_chart(
        present.top_chart(present.top_frame(prediction)), width="stretch", key="top_chart"
    )


def draw_comparison(
    image: str | bytes | None, models: list[str], answers: Iterable[ModelAnswer]
) -> dict[str, ModelAnswer]:
    """A card per model, filled as `answers` come, then the chart across the models."""
    st.subheader("Every model on this image")
    if image is not None:
        st.image(image, width=240, alt="The image that was classified")
    slots = {}
    for start in range(0, len(models), CARDS_PER_ROW):
        row = models[start : start + CARDS_PER_ROW]
        for column, model in zip(st.columns(CARDS_PER_ROW), row, strict=False):
            with column:
                slots[model] = st.empty()
                # Keyed by state, so a test (or a stylesheet) can tell waiting from answered.
                with slots[model].container(border=True, key=f"waiting_{model}"):
                    st.markdown(f"**`{model}`**")
                    st.caption("Waiting for its answer…")
    received = {}
    for answer in answers:
        received[answer.model] = answer
        with slots[answer.model].container(border=True, key=f"result_{answer.model}"):
            _card(answer)
    predictions = {m: received[m].prediction for m in models if received[m].prediction}
    if predictions:
        st.subheader("The models' top classes side by side")
        frame = present.compare_frame(predictions)
        st.altair_chart(
            present.compare_chart(frame),
            width="stretch",
            height=present.compare_height(frame),  # Streamlit sets a chart's height itself
            key="compare_chart",
        )
        st.caption(
            f"Each model's best {present.COMPARE_CLASSES} classes; a model with no bar for a "
            f"class did not rank it in its top {present.CHART_ROWS}."
        )
    return received


def _card(answer: ModelAnswer) -> None:
    st.markdown(f"**`{answer.model}`**")
    prediction = answer.prediction
    if prediction is None:
        st.error(answer.error)
        return
    st.markdown(present.ranked_list(prediction))
    st.caption(present.timing(prediction, answer.round_trip_ms))
    if prediction.untrained:
        st.warning(present.UNTRAINED_SHORT)
