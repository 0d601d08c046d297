"""Driving the Streamlit page with AppTest, finding widgets by key, as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "frontend" / "app.py")
CONFIG_VARS = (
    "SERVING_URL",
    "MODEL_PICKER",
    "BACKEND_AUTH",
    "BACKEND_AUDIENCE",
    "BACKEND_TIMEOUT_S",
    "BACKEND_CONNECT_TIMEOUT_S",
)


def reset_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration from the host's environment, and empty Streamlit caches."""
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page() -> AppTest:
    """A new browser session on the page (configured by the environment), first run done."""
    return AppTest.from_file(APP, default_timeout=60).run()


def open_tab(at: AppTest, name: str) -> AppTest:
    """Tap the input tab `name`: only the open tab is drawn."""
    if at.session_state["inputs"] != name:
        at.session_state["inputs"] = name
        at.run()
    return at


def classify_url(at: AppTest, url: str) -> AppTest:
    open_tab(at, "Image URL")
    at.text_input(key="url").input(url)
    return at.button(key="classify_url").click().run()


def classify_upload(at: AppTest, name: str, data: bytes, mime: str) -> AppTest:
    open_tab(at, "Upload")
    # The uploader comes back under a new key after each upload it sent (frontend.sources).
    generation = at.session_state.get("upload_generation", 0)
    # Chosen is sent: no second tap.
    return at.file_uploader(key=f"upload_{generation}").set_value((name, data, mime)).run()


def classify_example(at: AppTest, key: str) -> AppTest:
    """One click on an example photo's button (`chelsea`, `coffee`, ...)."""
    open_tab(at, "Examples")
    return at.button(key=f"example_{key}").click().run()


def take_photo(at: AppTest, data: bytes) -> AppTest:
    """Open the camera's tab, take a photo (these bytes): it is classified."""
    open_tab(at, "Camera")
    # Taken is sent: no second tap.
    return at.camera_input(key="camera").set_value(("photo.jpg", data, "image/jpeg")).run()


def compare_all(at: AppTest) -> AppTest:
    return at.toggle(key="compare").set_value(True).run()


def card(at: AppTest, model: str) -> dict[str, list[str]] | None:
    """What the compare view shows for `model` once it answered: markdown, captions, errors."""
    try:
        block = at.get_by_key(f"result_{model}")
    except KeyError:
        return None
    return {
        kind: [e.value for e in block.children.values() if e.type == kind]
        for kind in ("markdown", "caption", "error", "warning")
    }


def compare_rows(at: AppTest) -> list[tuple[str, str, float]]:
    """(model, label, probability) rows of the compare chart, in the order drawn."""
    frame = _chart_frame(at)
    return list(zip(frame["model"], frame["label"], frame["probability"], strict=True))


def _chart_frame(at: AppTest):
    (chart,) = at.get("vega_lite_chart")  # the page draws one chart: top-k or compare
    (dataset,) = chart.proto.datasets
    return dataframe_util.convert_arrow_bytes_to_pandas_df(dataset.data.data)


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def chart_rows(at: AppTest) -> list[tuple[str, float]]:
    """(label, probability) rows of the top-k chart, in the order drawn."""
    frame = _chart_frame(at)
    return list(zip(frame["label"], frame["probability"], strict=True))


def shown_model(at: AppTest) -> str | None:
    """The model named in the result's caption ("Model: `id` · ...")."""
    for caption in texts(at.caption):
        if caption.startswith("Model: `"):
            return caption.split("`")[1]
    return None


def shown_images(at: AppTest) -> list:
    """What each result image shows (a list of URLs or media URLs per element).

    Not the example photos' thumbnails: those are inside the input tabs."""
    thumbnails = {id(image) for tab in at.tabs for image in tab.get("image")}
    return [image.value for image in at.get("image") if id(image) not in thumbnails]


def details(at: AppTest) -> list[str]:
    """The technical text folded into the page's "Details" expanders."""
    return [code.value for expander in at.expander for code in expander.get("code")]
