"""The page's link: model, compare and the image (URL or example) in the query, so a copied
link or a reload shows the same view; uploads are never in it; a stale answer goes."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.frontend_page import (
    APP,
    card,
    chart_rows,
    classify_example,
    classify_upload,
    classify_url,
    compare_all,
    open_page,
    open_tab,
    reset_page,
    shown_images,
    shown_model,
    texts,
)
from tests.frontend_servers import JPEG
from tests.test_frontend_compare import MODELS, backend
from tests.test_frontend_page import IMAGE_URL


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    reset_page(monkeypatch)


def open_link(query: dict[str, str]) -> AppTest:
    """A fresh browser session opening the page at a link with this query."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    return at.run()


def test_a_copied_link_shows_the_same_model_image_and_answer_in_a_new_session(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        at.selectbox(key="model").select("vgg16").run()
        at = classify_url(at, IMAGE_URL)
        copied = dict(at.query_params)
        assert copied == {"model": "vgg16", "url": IMAGE_URL}

        fresh = open_link(copied)
    assert not fresh.exception
    assert shown_model(fresh) == "vgg16"
    assert fresh.selectbox(key="model").value == "vgg16"
    assert shown_images(fresh) == [[IMAGE_URL]]
    assert chart_rows(fresh)[0] == ("tiger cat", 0.5)  # vgg16's answer, asked again
    assert server.paths("POST") == ["/model/vgg16/predict"] * 2


def test_a_reload_keeps_an_example_and_compare(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_example(compare_all(open_page()), "coffee")
        assert at.query_params["example"] == "coffee" and at.query_params["compare"] == "1"
        reloaded = open_link(dict(at.query_params))
    assert reloaded.toggle(key="compare").value is True
    assert all(card(reloaded, m) for m in MODELS)


def test_an_upload_is_not_in_the_link(monkeypatch):
    with backend(["resnet152"]) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(open_page(), IMAGE_URL)
        assert at.query_params["url"] == IMAGE_URL
        at = classify_upload(at, "sky.jpg", JPEG, "image/jpeg")
    assert "url" not in at.query_params and "example" not in at.query_params
    assert shown_model(at) == "resnet152"
    assert any("not part of the page's link" in c for c in texts(at.caption))


def test_another_model_answers_for_the_linked_image_at_once(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(open_page(), IMAGE_URL)
        assert chart_rows(at)[0] == ("tabby", 0.6)
        at.selectbox(key="model").select("swin_b").run()
    # Not the previous model's answer under the new name: the new model's own.
    assert shown_model(at) == "swin_b"
    assert chart_rows(at)[0] == ("tabby", 0.9)
    assert at.query_params["model"] == "swin_b"


def test_an_uploads_answer_goes_when_another_model_is_picked(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_upload(open_page(), "sky.jpg", JPEG, "image/jpeg")
        assert shown_model(at) == "resnet152"
        at.selectbox(key="model").select("vgg16").run()
    assert shown_model(at) is None  # stale: it was resnet152's answer
    assert len(server.paths("POST")) == 1  # the upload was let go: nothing to resend


def test_a_link_with_a_bad_url_says_so_and_sends_nothing(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_link({"url": "file:///etc/passwd", "model": "vgg16"})
    assert not at.exception
    assert any("must start with http" in w for w in texts(at.warning))
    assert server.paths("POST") == []
    assert "url" not in at.query_params


def test_a_link_naming_an_unknown_model_or_example_falls_back(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_link({"model": "gone", "example": "nothing"})
    assert not at.exception
    assert at.selectbox(key="model").value == MODELS[0]
    assert server.paths("POST") == []


def test_a_pasted_url_is_classified_without_a_click_and_typing_is_not(monkeypatch):
    with backend(["resnet152"]) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_tab(open_page(), "Image URL")
        # Typed: the field commits after each pause, a few characters at a time.
        for typed in ("https://", "https://images.", "https://images.exa"):
            at.text_input(key="url").input(typed).run()
        assert server.paths("POST") == []
        assert shown_model(at) is None
        # Pasted: the whole link arrives at once.
        at = open_tab(open_page(), "Image URL")
        at.text_input(key="url").input(IMAGE_URL).run()
    assert server.paths("POST") == ["/model/resnet152/predict"]
    assert shown_model(at) == "resnet152"
