"""Baked Vision's page: an image (an example, a URL, an upload or the camera) in, classes out.

Run it with `python -m frontend`. Configuration (see frontend/config.py): SERVING_URL,
MODEL_PICKER, BACKEND_AUTH. The chosen model lives in this browser session and in the page's
link (frontend/link.py), and is sent with every request: no user ever changes the server's
state.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from frontend import link, present, sources
from frontend.auth import IdTokenSessions
from frontend.choice import Choice, choose, model_info
from frontend.client import BackendClient, BackendError
from frontend.config import ConfigError, FrontendConfig
from frontend.inputs import InvalidInput
from frontend.results import (
    Outcome,
    ask_every_model,
    ask_one,
    scroll_if_fresh,
    show,
    view_of,
)

OUTCOME = "outcome"
TAB = "inputs"  # the open tab's name, in the session
TABS = {
    "Examples": sources.examples_form,
    "Image URL": sources.url_form,
    "Upload": sources.upload_form,
    "Camera": sources.camera_form,
}
STYLE = Path(__file__).with_name("page.css")


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
    """The ways in, as tabs; the query the user just sent, if any.

    Only the open tab is drawn (Streamlit's lazy tabs): the camera starts when its tab is
    tapped, one tap away, and the browser asks for it then, not on every visit.
    """
    tabs = st.tabs(list(TABS), key=TAB, on_change="rerun")
    query = None
    for tab, form in zip(tabs, TABS.values(), strict=True):
        if not tab.open:
            continue
        with tab:
            try:
                query = form() or query
            except InvalidInput as exc:
                st.session_state[OUTCOME] = Outcome(problem=str(exc))
                link.keep_query(None)  # the link no longer names what is on the screen
    return query


def answer(client: BackendClient, choice: Choice, query: sources.Query) -> None:
    """Asks, draws the answer as it arrives, and keeps it (and its image in the link)."""
    view = view_of(query.source, choice.model, choice.compare)
    link.keep_query(query)
    if choice.compare:
        st.session_state[OUTCOME] = ask_every_model(client, query, choice.models, view)
        scroll_if_fresh()
    else:
        st.session_state[OUTCOME] = ask_one(client, query, choice.model, view)
        if not query.from_upload:  # an upload's answer is drawn by the rerun that follows
            show(st.session_state[OUTCOME])


def follow_the_link(choice: Choice) -> sources.Query | None:
    """The link's image, when what is shown is not its answer (a link opened, a model changed);
    drops a result that no longer matches the choice (an upload asked of another model)."""
    outcome = st.session_state.get(OUTCOME)
    try:
        linked = link.linked_query()
    except InvalidInput as exc:
        st.session_state[OUTCOME] = Outcome(problem=str(exc))
        link.keep_query(None)
        return None
    if linked is not None:
        if outcome is None or outcome.view != view_of(linked.source, choice.model, choice.compare):
            return linked
        return None
    tied = outcome is not None and outcome.view is not None  # to an input, not a refusal
    if tied and outcome.view != view_of(outcome.view[0], choice.model, choice.compare):
        del st.session_state[OUTCOME]  # asked of another model
    return None


def main() -> None:
    st.set_page_config(page_title="Baked Vision", page_icon="🔎")
    st.html(STYLE)
    st.title("Baked Vision")
    intro = st.empty()
    try:
        config = FrontendConfig.from_env()
    except ConfigError as exc:
        st.error(f"This page is not configured: {exc}")
        st.stop()
    client = make_client(config)
    choice = choose(config, client)
    if choice is None:
        st.stop()
    try:
        info = model_info(client, config.base_url, choice.model)
    except BackendError:
        info = None  # a gateway may not route metadata; the page works without it
    intro.caption(present.intro(info))
    area = st.container(key="answer")  # the answer sits above the inputs: where the eye is
    query = ask_for_an_image()
    with area:
        if query is None:
            query = follow_the_link(choice)
        if query is not None:
            answer(client, choice, query)  # drawn as it arrives
            if query.from_upload:
                # Drawn again at once, from the session's outcome, with the uploader empty under
                # its new key: Streamlit drops the file now, not at the user's next click.
                st.rerun()
        elif OUTCOME in st.session_state:
            show(st.session_state[OUTCOME])


main()
