"""The ways in: an example photo, an image URL, an upload, the camera.

Each draws its widgets and returns a `Query` when the user asked for a classification (or
raises InvalidInput saying what to fix); the page then asks one model or all of them. A query
also says what of it goes into the page's link (frontend/link.py): an image URL or an
example, never an upload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import streamlit as st

from frontend.client import BackendClient, Prediction
from frontend.examples import EXAMPLES, by_key
from frontend.inputs import UPLOAD_TYPES, check_image_url, check_upload
from frontend.preview import preview

UPLOAD_KEY = "upload"  # the uploader's key is this and its generation: upload_0, upload_1...
UPLOAD_GENERATION = "upload_generation"
URL_KEY = "url"
LAST_URL = "url_last_committed"
PASTED = "url_pasted"
LAST_PHOTO = "camera_last_photo"
# A URL that grows by this many characters between two commits of the field (each after a
# 250 ms pause) was pasted, not typed: it is classified at once.
PASTE_MIN_CHARS = 12
THUMBNAIL_PX = 150  # two examples a row on a phone, four on a desktop


@dataclass(frozen=True)
class Query:
    """One image to classify: a URL (the backend downloads it) or bytes (sent as a file)."""

    image: str | bytes  # also what the page shows: the browser loads a URL itself
    filename: str = "image"
    content_type: str = "application/octet-stream"
    from_upload: bool = False  # the uploader holds the file until the page is drawn again
    # What the page's link keeps of it: {"url": ...}, {"example": key}, or {} (an upload).
    link: dict[str, str] = field(default_factory=dict)
    source: str = ""  # names this input: a result is stale once the input is another

    def shown(self) -> str | bytes | None:
        """What the page shows and keeps of it: the URL, or a small preview (frontend.preview)."""
        return self.image if isinstance(self.image, str) else preview(self.image)

    def send(self, client: BackendClient, model: str) -> Prediction:
        if isinstance(self.image, str):
            return client.predict_url(self.image, model=model)
        return client.predict_image(
            self.image, model=model, filename=self.filename, content_type=self.content_type
        )


def url_query(text: str | None) -> Query:
    url = check_image_url(text)
    return Query(url, link={"url": url}, source=f"url:{url}")


def example_query(key: str) -> Query:
    example = by_key(key)
    return Query(
        example.read(),
        f"{example.key}.jpg",
        "image/jpeg",
        link={"example": example.key},
        source=f"example:{example.key}",
    )


def url_form() -> Query | None:
    # Committed after a pause in typing; a paste is classified without a click (_committed).
    text = st.text_input(
        "Image URL",
        key=URL_KEY,
        placeholder="Paste a link to a picture: https://example.com/cat.jpg",
        live=True,
        on_change=_committed,
    )
    clicked = st.button("Classify", key="classify_url", type="primary")
    if st.session_state.pop(PASTED, False) or clicked:
        return url_query(text)
    return None


def _committed() -> None:
    new = st.session_state.get(URL_KEY) or ""
    old = st.session_state.get(LAST_URL, "")
    st.session_state[LAST_URL] = new
    if len(new.strip()) - len(old.strip()) >= PASTE_MIN_CHARS and "://" in new:
        st.session_state[PASTED] = True


def upload_form() -> Query | None:
    # Once sent, the file is let go: the uploader comes back empty under a new key, so Streamlit
    # drops the file's bytes (up to 10 MB per session), and the session keeps a preview only.
    generation = st.session_state.get(UPLOAD_GENERATION, 0)
    upload = st.file_uploader(
        "Image file: drop it here, or browse (on a phone: your photos or the camera)",
        type=list(UPLOAD_TYPES),
        key=f"{UPLOAD_KEY}_{generation}",
    )
    st.caption("Uploads are classified at once, and are not part of the page's link.")
    if upload is None:
        return None
    # Chosen: classified at once, no second tap.
    st.session_state[UPLOAD_GENERATION] = generation + 1
    data = check_upload(upload.getvalue())
    return Query(data, upload.name, upload.type, from_upload=True, source=f"upload:{generation}")


def camera_form() -> Query | None:
    # Drawn only while its tab is open (frontend/app.py): the browser asks for the camera then.
    st.caption("Your browser asks to use the camera. The photo goes to the classifier only.")
    photo = st.camera_input("Take a photo", key="camera")
    if photo is None:
        return None
    # A photo taken is classified at once, once: the widget keeps it across reruns.
    data = check_upload(photo.getvalue())
    source = f"camera:{hashlib.sha256(data).hexdigest()[:16]}"
    if st.session_state.get(LAST_PHOTO) == source:
        return None
    st.session_state[LAST_PHOTO] = source
    return Query(data, "camera.jpg", photo.type, source=source)


def examples_form() -> Query | None:
    st.caption("Public domain and CC0 photos that ship with this page: one tap classifies one.")
    asked = None
    # A row that wraps: two thumbnails a row on a phone, all four on a desktop.
    with st.container(horizontal=True, key="gallery"):
        for example in EXAMPLES:
            with st.container(width=THUMBNAIL_PX, key=f"thumb_{example.key}"):
                st.image(example.read(), width="stretch", alt=example.title)
                if st.button(example.title, key=f"example_{example.key}", width="stretch"):
                    asked = example_query(example.key)
    return asked
