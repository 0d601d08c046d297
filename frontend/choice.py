"""Which models the backend serves, and which one this browser session asks.

The user's pick is kept in `st.session_state[CHOICE]`, a key of its own, not only in the
picker's widget state: Streamlit deletes a widget's state on any run that does not draw the
widget, so a run where the model list failed would otherwise forget the pick, send the next
request to the default model, and show the default again after recovery.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from frontend import link, present
from frontend.client import BackendClient, BackendError
from frontend.config import FrontendConfig
from frontend.messages import explain

CHOICE = "chosen_model"  # the session's pick, kept across any failure
KNOWN = "known_models"  # the last model list this session saw
PICKER = "model"  # the picker widget's key
COMPARE = "compare"  # the compare toggle's key

# Long enough to spare the backend a call per page interaction, short enough that a
# redeployed backend's models show up soon.
MODELS_TTL_S = 60


@dataclass(frozen=True)
class Choice:
    """What the session's requests go to."""

    model: str  # the one model a single request goes to
    models: list[str]  # every model the backend listed (the compare view asks all of them)
    compare: bool  # ask every model at once


@st.cache_data(ttl=MODELS_TTL_S, show_spinner=False)
def served_models(_client: BackendClient, base_url: str) -> list[str]:
    """The model ids behind `base_url` (the cache key; errors are not cached)."""
    return _client.list_models()


@st.cache_data(ttl=MODELS_TTL_S, show_spinner=False)
def model_info(_client: BackendClient, base_url: str, model_id: str) -> dict:
    return _client.model_info(model_id)


def choose(config: FrontendConfig, client: BackendClient) -> Choice | None:
    """Draws the picker and the compare toggle; None: nothing can be asked (said on the page)."""
    try:
        models = served_models(client, config.base_url)
        listed = True
    except BackendError as exc:
        plain = explain(exc)
        st.error(f"Could not load the list of models. {plain.text}")
        with st.expander("Details"):
            st.code(plain.detail, language=None, wrap_lines=True)
        models, listed = st.session_state.get(KNOWN), False
        if not models:
            # Every prediction is routed by model id: without one, nothing can be sent, and
            # guessing would answer with a model the user did not pick.
            st.info("Nothing can be classified until the backend lists its models; reload soon.")
            return None
    st.session_state[KNOWN] = models

    picker = config.shows_picker(models)
    can_compare = picker and len(models) > 1
    if listed and link.first_visit():
        _follow_link(models, can_compare)
    comparing = can_compare and st.session_state.get(COMPARE, False)
    # One row: the picker and the compare switch (stacked on a phone).
    if picker:
        left, right = st.columns([3, 2], vertical_alignment="bottom")
    else:
        left = right = st.container()
    with left:
        if not picker:
            model = models[0]  # the backend's default
        elif listed:
            model = _pick(models, disabled=comparing)
        else:
            model = _remembered(models)
    with right:
        compare = can_compare and st.toggle(
            "Compare every model",
            key=COMPARE,
            help="Ask every model about the same image at once; see their answers side by side.",
        )
    if not compare:
        show_model(client, config, model)
    link.keep_choice(model if picker else None, compare)
    return Choice(model, models, compare)


def _follow_link(models: list[str], can_compare: bool) -> None:
    """A session opened from a link starts with the link's model and compare setting."""
    linked = link.linked_model()
    if linked in models:
        st.session_state[CHOICE] = linked
    if can_compare and link.linked_compare():
        st.session_state[COMPARE] = True


def _pick(models: list[str], *, disabled: bool) -> str:
    saved = st.session_state.get(CHOICE)
    if saved in models:
        st.session_state[PICKER] = saved  # what the widget shows, whatever a past run deleted
    elif saved is not None:
        st.warning(f"`{saved}`, the model you chose, is no longer served; pick another.")
        st.session_state.pop(PICKER, None)
    chosen = st.selectbox(
        "Model",
        models,
        key=PICKER,
        on_change=_remember,
        disabled=disabled,
        help="Used for your requests only.",
    )
    st.session_state[CHOICE] = chosen
    return chosen


def _remember() -> None:
    # Runs before the script, so the new pick is saved before _pick restores the old one.
    st.session_state[CHOICE] = st.session_state[PICKER]


def _remembered(models: list[str]) -> str:
    """The model this session picked before the list failed (the picker waits for a list)."""
    model = st.session_state.get(CHOICE, models[0])
    st.info(f"Your requests still go to `{model}`, the model you chose.")
    return model


def show_model(client: BackendClient, config: FrontendConfig, model_id: str) -> None:
    try:
        info = model_info(client, config.base_url, model_id)
    except BackendError:
        return  # a gateway may not route metadata; the page works without it
    st.caption(present.model_caption(info))
    if info.get("untrained") is True:
        st.warning(present.UNTRAINED_SHORT)
