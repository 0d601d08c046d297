"""Baked Vision's page: an image (URL, upload, camera or an example) in, ImageNet classes out.

Run it with `python -m frontend`. Configuration (see frontend/config.py): SERVING_URL,
MODEL_PICKER, BACKEND_AUTH. The chosen model lives in this browser session's
`st.session_state` and is sent with every request: no user ever changes the server's state.
"""

from __future__ import annotations

import streamlit as st

from frontend import sources
from frontend.auth import IdTokenSessions
from frontend.choice import Choice, choose
from frontend.client import BackendClient
from frontend.config import ConfigError, FrontendConfig
from frontend.inputs import InvalidInput
from frontend.results import Outcome, ask_every_model, ask_one, show


@st.cache_resource
def id_token_sessions(audience: str) -> IdTokenSessions:
    """One set of credentials per process: every session calls the backend as one account."""
    return IdTokenSessions(audience)


def make_client(config: FrontendConfig) -> BackendClient:
    sessions = None
    if config.auth == "id_token":
        # Cloud Run checks that an ID token's audience is the service's own URL.
        sessions = id_token_sessions(config.audience or config.base_url)
    return BackendClient(
        config.base_url,
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        sessions=sessions,
    )


def ask_for_an_image() -> sources.Query | None:
    """The four ways in, as tabs; the query the user just sent, if any."""
    tabs = st.tabs(["Image URL", "Upload", "Camera", "Examples"])
    forms = (sources.url_form, sources.upload_form, sources.camera_form, sources.examples_form)
    query = None
    for tab, form in zip(tabs, forms, strict=True):
        with tab:
            try:
                query = form() or query
            except InvalidInput as exc:
                st.session_state.outcome = Outcome(error=str(exc), input_problem=True)
    return query


def answer(client: BackendClient, choice: Choice, query: sources.Query) -> None:
    if choice.compare:
        st.session_state.outcome = ask_every_model(client, query, choice.models)
    else:
        st.session_state.outcome = ask_one(client, query, choice.model)
        show(st.session_state.outcome)


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
    choice = choose(config, client)
    if choice is None:
        st.stop()
    query = ask_for_an_image()
    if query is not None:
        answer(client, choice, query)  # drawn as it arrives
        if query.from_upload:
            # Drawn again at once, from the session's outcome, with the uploader empty under its
            # new key: Streamlit drops the file now, not at the user's next click.
            st.rerun()
    elif "outcome" in st.session_state:
        show(st.session_state.outcome)


main()
