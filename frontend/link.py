"""The page's link: the model, compare on or off, and the image (a URL or an example) live in
the address bar's query (`st.query_params`), so a copied link or a reload shows the same view.

An upload or a camera photo is never in the link: it stays in the browser session that sent it.
"""

from __future__ import annotations

import streamlit as st

from frontend.sources import Query, example_query, url_query

MODEL, COMPARE, URL, EXAMPLE = "model", "compare", "url", "example"
READ = "link_read"  # this session has taken its model and compare setting from the link


def first_visit() -> bool:
    """True once per browser session: the run that reads the link it was opened with."""
    if st.session_state.get(READ):
        return False
    st.session_state[READ] = True
    return True


def linked_model() -> str | None:
    return st.query_params.get(MODEL) or None


def linked_compare() -> bool:
    return st.query_params.get(COMPARE) == "1"


def linked_query() -> Query | None:
    """The image the link names, if any; raises InvalidInput for a URL that cannot be sent."""
    if url := st.query_params.get(URL):
        return url_query(url)
    if key := st.query_params.get(EXAMPLE):
        try:
            return example_query(key)
        except KeyError:  # a link edited by hand, or an example since removed
            del st.query_params[EXAMPLE]
    return None


def keep_choice(model: str | None, compare: bool) -> None:
    """The model (None: the backend's default, no picker) and compare setting, in the link."""
    _set(MODEL, model)
    _set(COMPARE, "1" if compare else None)


def keep_query(query: Query | None) -> None:
    """The link names this image now (an upload: no image at all)."""
    for name in (URL, EXAMPLE):
        _set(name, (query.link if query else {}).get(name))


def _set(name: str, value: str | None) -> None:
    # Written only when it changes: each write is a history entry in the browser.
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value
