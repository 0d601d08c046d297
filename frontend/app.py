"""Baked Vision's page: an image (URL or upload) in, ImageNet predictions out.

Run it with `python -m frontend`. Configuration (see frontend/config.py): SERVING_URL or
API_GATEWAY, FRONTEND_MODE, BACKEND_AUTH. The chosen model lives in this browser session's
`st.session_state` and is sent with every request: no user ever changes the server's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from frontend import present
from frontend.auth import CachedIdTokens
from frontend.client import BackendClient, BackendError, Prediction
from frontend.config import ConfigError, FrontendConfig
from frontend.inputs import UPLOAD_TYPES, InvalidInput, check_image_url, check_upload

# Long enough to spare the backend a call per page interaction, short enough that a
# redeployed backend's models show up soon.
MODELS_TTL_S = 60


@dataclass(frozen=True)
class Outcome:
    """The last thing the user asked for and what came of it (kept across reruns)."""

    image: str | bytes | None = None  # a URL (the browser loads it) or the uploaded bytes
    prediction: Prediction | None = None  # with `image`, or else `error`
    round_trip_ms: float = 0.0
    error: str | None = None
    input_problem: bool = False  # the input was refused before anything was sent


@st.cache_resource
def token_source() -> CachedIdTokens:
    """One token cache per process: every session calls the same backend as the same account."""
    return CachedIdTokens()


@st.cache_data(ttl=MODELS_TTL_S, show_spinner=False)
def served_models(_client: BackendClient, base_url: str) -> list[str]:
    """The model ids behind `base_url` (the cache key; errors are not cached)."""
    return _client.list_models()


@st.cache_data(ttl=MODELS_TTL_S, show_spinner=False)
def model_info(_client: BackendClient, base_url: str, model_id: str) -> dict:
    return _client.model_info(model_id)


def make_client(config: FrontendConfig) -> BackendClient:
    return BackendClient(
        config.base_url,
        path_routing=config.path_routing,
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        token_source=token_source() if config.auth == "id_token" else None,
        audience=config.audience,
    )


def choose_model(config: FrontendConfig, client: BackendClient) -> str | None:
    """The model this session asks for; None: the backend's default (v1)."""
    try:
        models = served_models(client, config.base_url)
    except BackendError as exc:
        st.error(f"Could not load the list of models. {exc}")
        if config.path_routing:
            st.stop()  # the gateway routes by model id: nothing can be sent without one
        return None

    picker = config.mode in ("v2", "v3") or (config.mode == "auto" and len(models) > 1)
    chosen = None
    if picker:
        chosen = st.selectbox("Model", models, key="model", help="Used for your requests only.")
    show_model(client, config, chosen or models[0])
    return chosen


def show_model(client: BackendClient, config: FrontendConfig, model_id: str) -> None:
    try:
        info = model_info(client, config.base_url, model_id)
    except BackendError:
        return  # a gateway may not route metadata; the page works without it
    st.caption(present.model_caption(info))
    if info.get("untrained") is True:
        st.warning(present.UNTRAINED_NOTE)


def ask(image: str | bytes, send: Callable[[], Prediction]) -> Outcome:
    """Run one request to the backend, timed, with any failure turned into a message."""
    start = time.perf_counter()
    try:
        with st.spinner("Classifying…"):
            prediction = send()
    except BackendError as exc:
        # No image with an error: the backend may have refused it as undecodable.
        return Outcome(error=str(exc))
    return Outcome(image, prediction, (time.perf_counter() - start) * 1000)


def url_form(client: BackendClient, model: str | None) -> None:
    with st.form("url_form", border=False):
        text = st.text_input("Image URL", key="url", placeholder="https://example.com/cat.jpg")
        if st.form_submit_button("Classify", key="classify_url", type="primary"):
            try:
                url = check_image_url(text)
            except InvalidInput as exc:
                st.session_state.outcome = Outcome(error=str(exc), input_problem=True)
                return
            st.session_state.outcome = ask(url, lambda: client.predict_url(url, model=model))


def upload_form(client: BackendClient, model: str | None) -> None:
    upload = st.file_uploader("Image file", type=list(UPLOAD_TYPES), key="upload")
    if st.button("Classify upload", key="classify_upload", disabled=upload is None):
        try:
            data = check_upload(upload.getvalue())
        except InvalidInput as exc:
            st.session_state.outcome = Outcome(error=str(exc), input_problem=True)
            return
        st.session_state.outcome = ask(
            data,
            lambda: client.predict_image(
                data, filename=upload.name, content_type=upload.type, model=model
            ),
        )


def show_outcome(outcome: Outcome) -> None:
    if outcome.error:
        (st.warning if outcome.input_problem else st.error)(outcome.error)
    if outcome.prediction is None or outcome.image is None:
        return
    prediction = outcome.prediction
    left, right = st.columns([2, 3])
    with left:
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


def main() -> None:
    st.set_page_config(page_title="Baked Vision", page_icon="🔎")
    st.title("Baked Vision")
    st.write("Classify an image into one of the 1,000 ImageNet categories.")
    try:
        config = FrontendConfig.from_env()
    except ConfigError as exc:
        st.error(f"This page is not configured: {exc}")
        st.stop()
    client = make_client(config)
    model = choose_model(config, client)

    by_url, by_upload = st.tabs(["Image URL", "Upload"])
    with by_url:
        url_form(client, model)
    with by_upload:
        upload_form(client, model)
    if "outcome" in st.session_state:
        show_outcome(st.session_state.outcome)


main()
