"""How a prediction and a model's metadata are put into words and a chart (no Streamlit)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from frontend.client import Prediction

CHART_ROWS = 5
# The compare chart shows each model's best few classes: enough to see where the models agree.
COMPARE_CLASSES = 3
# Below this probability the top label is a guess, and the sentence says so.
CONFIDENT = 0.2

UNTRAINED_NOTE = (
    "Untrained demo weights: this model's weights are random (the real ones could not be "
    "downloaded where the backend runs), so its predictions are meaningless."
)
UNTRAINED_SHORT = "Untrained demo weights: a random answer."


def headline(prediction: Prediction) -> str:
    """The top prediction as a sentence (Markdown)."""
    top = prediction.top
    if prediction.untrained:
        # Random weights can be "certain"; the sentence must not sound like a finding.
        return (
            f"The untrained demo model picks **{top.label}** "
            f"({percent(top.probability)}), which is a random answer."
        )
    if top.probability >= CONFIDENT:
        return f"This looks like **{top.label}** ({percent(top.probability)} probability)."
    return (
        f"Best guess: **{top.label}**, but the model is unsure "
        f"({percent(top.probability)} probability)."
    )


def provenance(prediction: Prediction, round_trip_ms: float) -> str:
    """Which model answered and how long it took."""
    return f"Model: `{prediction.model}` · {timing(prediction, round_trip_ms)}"


def top_frame(prediction: Prediction, rows: int = CHART_ROWS) -> pd.DataFrame:
    """The best `rows` labels and their probabilities, best first."""
    return pd.DataFrame(
        {
            "label": [p.label for p in prediction.labels[:rows]],
            "probability": [p.probability for p in prediction.labels[:rows]],
        }
    )


def top_chart(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars, best on top, each labelled with its percentage."""
    # Sorted by the frame's order, not alphabetically (Vega-Lite's default for a nominal axis).
    y = alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=260))
    # A fixed 0-100 % scale: an unsure model's bars look short instead of filling the width.
    x = alt.X(
        "probability:Q",
        title="probability",
        scale=alt.Scale(domain=[0, 1]),
        axis=alt.Axis(format="%"),
    )
    bars = alt.Chart(frame).mark_bar().encode(x=x, y=y, tooltip=["label", "probability"])
    text = bars.mark_text(align="left", dx=4).encode(text=alt.Text("probability:Q", format=".1%"))
    return bars + text


def ranked_list(prediction: Prediction, rows: int = CHART_ROWS) -> str:
    """The best `rows` labels as a numbered Markdown list with their probabilities."""
    return "\n".join(
        f"{rank}. **{p.label}** {percent(p.probability)}"
        for rank, p in enumerate(prediction.labels[:rows], start=1)
    )


def timing(prediction: Prediction, round_trip_ms: float) -> str:
    """How long one model took: on the backend, and the whole round trip."""
    parts = []
    if prediction.total_ms is not None:
        parts.append(f"{duration(prediction.total_ms)} on the backend")
    parts.append(f"{duration(round_trip_ms)} round trip")
    return " · ".join(parts)


def compare_frame(predictions: dict[str, Prediction], top: int = COMPARE_CLASSES) -> pd.DataFrame:
    """model, label, probability: each model's probability for every class that is in some
    model's best `top`, where that model ranked it at all (its top-k); classes best first."""
    classes: dict[str, float] = {}  # label -> its highest probability among the models
    for prediction in predictions.values():
        for p in prediction.labels[:top]:
            classes[p.label] = max(classes.get(p.label, 0.0), p.probability)
    order = sorted(classes, key=lambda label: -classes[label])
    rows = [
        (model, p.label, p.probability)
        for label in order
        for model, prediction in predictions.items()
        for p in prediction.labels
        if p.label == label
    ]
    return pd.DataFrame(rows, columns=["model", "label", "probability"])


def compare_chart(frame: pd.DataFrame) -> alt.Chart:
    """For each class, one bar per model: where the models agree, the bars line up."""
    labels = list(dict.fromkeys(frame["label"]))
    models = list(dict.fromkeys(frame["model"]))
    y = alt.Y("label:N", sort=labels, title=None, axis=alt.Axis(labelLimit=260))
    x = alt.X(
        "probability:Q",
        title="probability",
        scale=alt.Scale(domain=[0, 1]),
        axis=alt.Axis(format="%"),
    )
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=x,
            y=y,
            yOffset=alt.YOffset("model:N", sort=models),
            color=alt.Color("model:N", sort=models, legend=alt.Legend(orient="bottom")),
            tooltip=["model", "label", alt.Tooltip("probability:Q", format=".1%")],
        )
    )
    text = bars.mark_text(align="left", dx=4, fontSize=10).encode(
        text=alt.Text("probability:Q", format=".0%"), color=alt.value("#444")
    )
    return bars + text


def compare_height(frame: pd.DataFrame) -> int:
    """Pixels for the compare chart: every model's bar of every class readable, and the legend."""
    bars = frame["label"].nunique() * frame["model"].nunique()
    return 90 + 14 * bars + 8 * frame["label"].nunique()


def model_caption(info: dict[str, Any]) -> str:
    """One line about a model: architecture, size and accuracy, from GET /models/<id>."""
    parts = [f"`{info.get('id', '?')}`"]
    if (architecture := info.get("architecture")) and architecture != info.get("id"):
        parts.append(f"{architecture} architecture")
    if isinstance(params := info.get("parameters"), int | float):
        parts.append(f"{params / 1e6:.1f} M parameters")
    if isinstance(acc1 := info.get("imagenet_acc1"), int | float):
        parts.append(f"{acc1:.1f} % top-1 on ImageNet (with its trained weights)")
    return " · ".join(parts)


def percent(probability: float) -> str:
    return f"{probability:.1%}"


def duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"
