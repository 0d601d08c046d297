"""What came of the last request, kept across reruns, and how the page draws it.

The answer is drawn at the top of the page, above the ways in: beside the image on a
desktop, right under it on a phone, and scrolled into view when it arrives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import streamlit as st

from frontend import present
from frontend.client import BackendClient, BackendError, Prediction
from frontend.compare import ModelAnswer, ask_all
from frontend.messages import Plain, explain
from frontend.sources import Query

CARDS_PER_ROW = 2  # four models in two rows: each card stays wide enough to read
SCROLL = "scroll_to_answer"  # a fresh answer: bring it into view on the next draw
# (source, model or "" when comparing, comparing): a result is stale once this changes.
View = tuple[str, str, bool]


@dataclass(frozen=True)
class Outcome:
    """One model's answer about one image, or what went wrong."""

    # A URL (the browser loads it) or a small preview of the sent bytes (frontend.preview);
    # None: nothing to show (a refused input, or one the page could not preview).
    image: str | bytes | None = None
    prediction: Prediction | None = None  # with `image`, or else `error` / `problem`
    round_trip_ms: float = 0.0
    error: Plain | None = None  # the backend gave no answer
    problem: str | None = None  # the input was refused before anything was sent
    view: View | None = None  # None: not tied to an input (a refused one)


@dataclass(frozen=True)
class Comparison:
    """Every model's answer about one image, in the models' order."""

    image: str | bytes | None  # as Outcome.image
    models: tuple[str, ...]
    answers: tuple[ModelAnswer, ...]
    view: View | None = None


def view_of(source: str, model: str, compare: bool) -> View:
    return (source, "" if compare else model, compare)


def ask_one(client: BackendClient, query: Query, model: str, view: View) -> Outcome:
    """One request to the backend, timed, with any failure turned into a message."""
    start = time.perf_counter()
    try:
        with st.spinner("Classifying…"):
            prediction = query.send(client, model)
    except BackendError as exc:
        # No image with an error: the backend may have refused it as undecodable.
        return Outcome(error=explain(exc), view=view)
    st.session_state[SCROLL] = True
    return Outcome(query.shown(), prediction, (time.perf_counter() - start) * 1000, view=view)


def ask_every_model(
    client: BackendClient, query: Query, models: list[str], view: View
) -> Comparison:
    """All the models at once; each answer is drawn the moment it arrives."""
    shown = query.shown()
    st.session_state[SCROLL] = True
    answers = draw_comparison(
        shown, models, ask_all(models, lambda model: query.send(client, model))
    )
    return Comparison(shown, tuple(models), tuple(answers[m] for m in models), view)


def show(outcome: Outcome | Comparison) -> None:
    if isinstance(outcome, Comparison):
        draw_comparison(outcome.image, list(outcome.models), outcome.answers)
    else:
        show_outcome(outcome)
    scroll_if_fresh()


def scroll_if_fresh() -> None:
    """Brings a fresh answer into view, once: the user may have scrolled down to an input."""
    if st.session_state.pop(SCROLL, False):
        scroll_into_view()


def show_error(plain: Plain) -> None:
    """The sentence and what to do on the surface; the technical detail folded away."""
    st.error(plain.text)
    if plain.detail:
        with st.expander("Details"):
            st.code(plain.detail, language=None, wrap_lines=True)


def show_outcome(outcome: Outcome) -> None:
    if outcome.problem:
        st.warning(outcome.problem)
    if outcome.error:
        show_error(outcome.error)
    if outcome.prediction is None:
        return
    prediction = outcome.prediction
    # Side by side on a desktop; Streamlit stacks columns on a narrow screen: image, then answer.
    left, right = st.columns([2, 3], gap="medium")
    with left:
        if outcome.image is not None:
            st.image(outcome.image, width="stretch", alt="The image that was classified")
    with right, st.container(key="top_answer"):
        st.markdown(f"## {prediction.top.label}")
        st.markdown(present.headline(prediction))
        st.caption(present.provenance(prediction, outcome.round_trip_ms))
    st.altair_chart(
        present.top_chart(present.top_frame(prediction)),
        width="stretch",
        height=present.top_height(len(prediction.labels)),
        key="top_chart",
    )


def draw_comparison(
    image: str | bytes | None, models: list[str], answers: Iterable[ModelAnswer]
) -> dict[str, ModelAnswer]:
    """A card per model, filled as `answers` come, then the chart across the models."""
    if image is not None:
        st.image(image, width=200, alt="The image that was classified")
    common = st.empty()  # one error for a cause every model shares (a bad URL)
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
        if answer.prediction is not None:  # failures wait: they may share one cause
            with slots[answer.model].container(border=True, key=f"result_{answer.model}"):
                _card(answer)
    errors = {received[m].error for m in models if received[m].prediction is None}
    shared = (
        len(models) > 1 and len(errors) == 1 and not any(a.prediction for a in received.values())
    )
    if shared:
        # One cause (a bad URL, the backend down): said once, not once per model.
        with common.container():
            show_error(next(iter(errors)))
    for model in models:
        if received[model].prediction is None:
            with slots[model].container(border=True, key=f"result_{model}"):
                if shared:
                    st.markdown(f"**`{model}`**")
                    st.caption("No answer: see above.")
                else:
                    _card(received[model])
    predictions = {m: received[m].prediction for m in models if received[m].prediction}
    if predictions:
        frame = present.compare_frame(predictions)
        st.altair_chart(
            present.compare_chart(frame, models),
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
        if answer.error:
            show_error(answer.error)
        return
    st.markdown(present.ranked_list(prediction))
    st.caption(present.timing(prediction, answer.round_trip_ms))
    if prediction.untrained:
        st.warning(present.UNTRAINED_SHORT)


# Scrolls to the answer only when its first lines (the top class) are not on screen already:
# a desktop keeps its title and picker in view, a phone moves to the answer.
_SCROLL_SCRIPT = """<script>
const area = document.querySelector('.st-key-answer');
const top = document.querySelector('.st-key-top_answer') || area;
if (area && top) {
  const box = top.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) {
    area.scrollIntoView({block: 'start', behavior: 'smooth'});
  }
}
</script>"""


def scroll_into_view() -> None:
    """Scrolls the page to the answer (st.html runs the script in the page itself)."""
    st.html(_SCROLL_SCRIPT, unsafe_allow_javascript=True)
