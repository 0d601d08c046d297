"""The four ways in: an image URL, an upload, the camera, an example photo.

Each draws its widgets and returns a `Query` when the user asked for a classification (or
raises InvalidInput saying what to fix); the page then asks one model or all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from frontend.client import BackendClient, Prediction
from frontend.examples import EXAMPLES
from frontend.inputs import UPLOAD_TYPES, check_image_url, check_upload
from frontend.preview import preview

UPLOAD_KEY = "upload"  # the uploader's key is this and its generation: upload_0, upload_1...
UPLOAD_GENERATION = "upload_generation"


@dataclass(frozen=True)
class Query:
    """One image to classify: a URL (the backend downloads it) or bytes (sent as a file)."""

    image: str | bytes  # also what the page shows: the browser loads a URL itself
    filename: str = "image"
    content_type: str = "application/octet-stream"
    from_upload: bool = False  # the uploader holds the file until the page is drawn again

    def shown(self) -> str | bytes | None:
        """What the page shows and keeps of it: the URL, or a small preview (frontend.preview)."""
        return self.image if isinstance(self.image, str) else preview(self.image)

    def send(self, client: BackendClient, model: str) -> Prediction:
        if isinstance(self.image, str):
            return client.predict_url(self.image, model=model)
        return client.predict_image(
            self.image, model=model, filename=self.filename, content_type=self.content_type
        )


def url_form() -> Query | None:
    with st.form("url_form", border=False):
        text = st.text_input("Image URL", key="url", placeholder="https://example.com/cat.jpg")
        if st.form_submit_button("Classify", key="classify_url", type="primary"):
            return Query(check_image_url(text))
    return None


def upload_form() -> Query | None:
    # Once sent, the file is let go: the uploader comes back empty under a new key, so Streamlit
    # drops the file's bytes (up to 10 MB per session), and the session keeps a preview only.
    generation = st.session_state.get(UPLOAD_GENERATION, 0)
    upload = st.file_uploader(
        "Image file", type=list(UPLOAD_TYPES), key=f"{UPLOAD_KEY}_{generation}"
    )
    if st.button("Classify upload", key="classify_upload", disabled=upload is None):
        query = Query(check_upload(upload.getvalue()), upload.name, upload.type, from_upload=True)
        st.session_state[UPLOAD_GENERATION] = generation + 1
        return query
    return None


def camera_form() -> Query | None:
    # The browser asks for the camera only once the user turns it on, not on every visit.
    if not st.toggle("Turn on the camera", key="camera_on"):
        st.caption("Your browser will ask to use the camera. The photo goes to the backend only.")
        return None
    photo = st.camera_input("Take a photo", key="camera")
    if st.button("Classify photo", key="classify_camera", disabled=photo is None):
        return Query(check_upload(photo.getvalue()), "camera.jpg", photo.type)
    return None


def examples_form() -> Query | None:
    st.caption("Public domain and CC0 photos that ship with this page: one click classifies one.")
    asked = None
    # Aligned at the bottom: photos of other shapes still leave the buttons in one row.
    columns = st.columns(len(EXAMPLES), vertical_alignment="bottom")
    for column, example in zip(columns, EXAMPLES, strict=True):
        with column:
            data = example.read()
            st.image(data, width="stretch")
            if st.button(example.title, key=f"example_{example.key}", width="stretch"):
                asked = Query(data, f"{example.key}.jpg", "image/jpeg")
    return asked
