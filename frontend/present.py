"""How a prediction and a model's metadata are put into words and a chart (no Streamlit)."""

from __future__ import annotations

import contextlib
from typing import Any

import altair as alt
import pandas as pd

from frontend.client import Prediction

CHART_ROWS = 5
ROW_PX, BAR_PX, LABEL_PX = 44, 14, 18  # a row of the top-k chart: its label above its bar
FLOOR = 0.02  # the shortest bar, as a share of the longest: small values stay visible
# One colour per model, the same in every chart and in the legend (Tableau 10, colour-blind
# friendly in its first four); models beyond ten cycle.
MODEL_COLOURS = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
# The compare chart shows each model's best few classes: enough to see where the models agree.
COMPARE_CLASSES = 3
# Below this probability the top label is a guess, and the sentence says so.
CONFIDENT = 0.2

UNTRAINED_NOTE = (
    "Untrained demo weights: this model's weights are random (the real ones could not be "
    "downloaded where the backend runs), so its predictions are meaningless."
)
UNTRAINED_SHORT = "Untrained demo weights: this model's answers are random."


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
    """One bar per label, best on top: the label written above its bar, the value at its end.

    Labels above the bars leave the bars the whole width, even on a phone. The scale runs to
    the best probability (not a fixed 100 %), and every bar is at least FLOOR of the longest,
    so a class of a few percent is still a bar, its true value written beside it.
    """
    top = float(frame["probability"].max()) if len(frame) else 1.0
    data = frame.assign(rank=range(len(frame)), shown=frame["probability"].clip(lower=FLOOR * top))
    base = alt.Chart(data).encode(
        y=alt.Y("rank:O", axis=None, title=None),
        tooltip=["label", alt.Tooltip("probability:Q", format=".1%")],
    )
    x = alt.X("shown:Q", axis=None, scale=alt.Scale(domain=[0, top * 1.25]), title=None)
    bars = base.mark_bar(size=BAR_PX, cornerRadiusEnd=3, yOffset=LABEL_PX / 2).encode(x=x)
    value = base.mark_text(align="left", dx=4, yOffset=LABEL_PX / 2, fontWeight="bold").encode(
        x=x, text=alt.Text("probability:Q", format=".1%")
    )
    label = base.mark_text(align="left", baseline="bottom", yOffset=-2, fontSize=13).encode(
        x=alt.value(0), text="label:N"
    )
    return (bars + value + label).configure_view(stroke=None)


def top_height(rows: int) -> int:
    """Pixels for `rows` bars with their labels above them."""
    return min(rows, CHART_ROWS) * ROW_PX + 10


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


def compare_chart(frame: pd.DataFrame, models: list[str]) -> alt.Chart:
    """For each class, one bar per model, grouped on its label: where the models agree, the
    bars line up. Each model keeps its colour (its place among the served `models`) in every
    chart, and the legend lists the models in the bars' order, above the chart, one per line
    on a narrow screen rather than cut."""
    labels = list(dict.fromkeys(frame["label"]))
    colours = [MODEL_COLOURS[i % len(MODEL_COLOURS)] for i in range(len(models))]
    colour = alt.Color(
        "model:N",
        sort=models,
        scale=alt.Scale(domain=models, range=colours),
        legend=alt.Legend(orient="top", title=None, columns=2, labelLimit=200),
    )
    y = alt.Y("label:N", sort=labels, title=None, axis=alt.Axis(labelLimit=140))
    x = alt.X("probability:Q", title=None, axis=alt.Axis(format="%", tickCount=4))
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=x,
            y=y,
            yOffset=alt.YOffset("model:N", sort=models, scale=alt.Scale(domain=models)),
            color=colour,
            tooltip=["model", "label", alt.Tooltip("probability:Q", format=".1%")],
        )
    )
    text = bars.mark_text(align="left", dx=3, fontSize=10).encode(
        text=alt.Text("probability:Q", format=".0%"), color=alt.value("#444")
    )
    # Room at the edges: the longest label and the last value are not clipped.
    return (bars + text).properties(padding={"left": 12, "right": 28, "top": 4, "bottom": 4})


def compare_height(frame: pd.DataFrame) -> int:
    """Pixels for the compare chart: every model's bar of every class readable, and the legend."""
    bars = frame["label"].nunique() * frame["model"].nunique()
    return 90 + 14 * bars + 8 * frame["label"].nunique()


def intro(info: dict[str, Any] | None) -> str:
    """What the page does, in the model's own terms: how many classes, and which."""
    classes = info.get("num_classes") if info else None
    if not isinstance(classes, int) or classes <= 0:
        return "Classify an image: take a photo, upload one, paste a link or tap an example."
    # Trained on ImageNet: the backend reports its ImageNet accuracy; a user's own model doesn't.
    kind = " ImageNet" if isinstance(info.get("imagenet_acc1"), int | float) else ""
    return f"Classify an image into one of {classes:,}{kind} categories."


def model_caption(info: dict[str, Any]) -> str:
    """One line about a model: architecture, size and accuracy, from GET /models/<id>."""
    parts = [f"`{info.get('id', '?')}`"]
    if info.get("precision") == "int8":  # beside the name: which graph answers
        parts[0] += " int8"
    if (architecture := info.get("architecture")) and architecture != info.get("id"):
        parts.append(f"{architecture} architecture")
    if isinstance(params := info.get("parameters"), int | float):
        parts.append(f"{params / 1e6:.1f} M parameters")
    if isinstance(acc1 := info.get("imagenet_acc1"), int | float):
        parts.append(f"{acc1:.1f} % top-1 on ImageNet (with its trained weights)")
    if info.get("precision") == "int8" and isinstance(gate := info.get("quantization"), dict):
        # Figures the page cannot read are left out: the name's "int8" says enough.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            parts.append(
                f"int8 top-1 {gate['int8_top1']:.1f} % (fp32 {gate['fp32_top1']:.1f} %) on "
                f"{gate['validation_images']} validation images, {gate['speedup']:.1f}x faster"
            )
    return " · ".join(parts)


def percent(probability: float) -> str:
    return f"{probability:.1%}"


def duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"
