"""The page against the real backend (two models): v1, v2 sessions, the v3 gateway."""

from __future__ import annotations

import pytest
import requests

from frontend.examples import EXAMPLES
from tests.frontend_page import (
    card,
    chart_rows,
    classify_example,
    classify_upload,
    classify_url,
    compare_all,
    compare_rows,
    details,
    open_page,
    reset_page,
    shown_model,
    texts,
)
from tests.frontend_servers import JPEG, gateway, image_server

pytestmark = pytest.mark.slow

MODELS = ["resnet18", "mobilenet_v3_large"]  # served by the backend_server fixture, default first


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    reset_page(monkeypatch)


@pytest.fixture(scope="module")
def images():
    with image_server() as server:
        yield server


def backend_answer(backend_url: str, image_url: str, model: str) -> dict:
    """What the backend itself says about the image: the page must show exactly this."""
    answer = requests.post(
        f"{backend_url}/predict", json={"url": image_url, "model": model}, timeout=60
    )
    answer.raise_for_status()
    return answer.json()


def assert_shows(at, answer: dict) -> None:
    assert not at.exception
    assert not at.error
    assert shown_model(at) == answer["model"]
    top = answer["predictions"][0]
    assert any(f"**{top['label']}**" in m for m in texts(at.markdown))
    assert [label for label, _ in chart_rows(at)] == [p["label"] for p in answer["predictions"]]


def test_v1_an_image_url_gets_the_default_models_prediction(backend_server, images, monkeypatch):
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    monkeypatch.setenv("MODEL_PICKER", "off")
    at = open_page()
    assert not at.exception
    assert not at.selectbox  # v1: one model, no picker
    assert any(c.startswith("`resnet18`") for c in texts(at.caption))  # the model, from metadata

    image_url = f"{images.url}/cat.jpg"
    at = classify_url(at, image_url)
    assert_shows(at, backend_answer(backend_server.url, image_url, "resnet18"))
    assert len(chart_rows(at)) == 5


def test_v1_an_upload_gets_a_prediction(backend_server, monkeypatch):
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    monkeypatch.setenv("MODEL_PICKER", "off")
    at = classify_upload(open_page(), "sky.jpg", JPEG, "image/jpeg")
    assert not at.exception
    assert not at.error
    assert shown_model(at) == "resnet18"
    assert len(chart_rows(at)) == 5


def test_v2_two_sessions_choosing_different_models_each_get_their_own(
    backend_server, images, monkeypatch
):
    # No MODEL_PICKER: with SERVING_URL and two served models, the picker appears (auto).
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    image_url = f"{images.url}/cat.jpg"
    alice, bob = open_page(), open_page()
    assert alice.selectbox(key="model").options == MODELS

    # Interleaved, as two people using the page at once: each choice stays in its session.
    alice.selectbox(key="model").select("mobilenet_v3_large").run()
    bob.selectbox(key="model").select("resnet18").run()
    alice = classify_url(alice, image_url)
    bob = classify_url(bob, image_url)
    assert_shows(alice, backend_answer(backend_server.url, image_url, "mobilenet_v3_large"))
    assert_shows(bob, backend_answer(backend_server.url, image_url, "resnet18"))

    bob.selectbox(key="model").select("mobilenet_v3_large").run()
    alice.selectbox(key="model").select("resnet18").run()
    bob = classify_url(bob, image_url)
    alice = classify_url(alice, image_url)
    assert shown_model(bob) == "mobilenet_v3_large"
    assert shown_model(alice) == "resnet18"
    # A newcomer gets the default, whatever the others chose.
    assert open_page().selectbox(key="model").value == "resnet18"


def test_v3_goes_through_the_gateway_by_path(backend_server, images, monkeypatch):
    with gateway(backend_server.url) as api:
        monkeypatch.setenv("SERVING_URL", api.url)  # the gateway, as any backend
        at = open_page()
        assert at.selectbox(key="model").options == MODELS
        at.selectbox(key="model").select("mobilenet_v3_large").run()
        image_url = f"{images.url}/cat.jpg"
        at = classify_url(at, image_url)
        assert_shows(at, backend_answer(backend_server.url, image_url, "mobilenet_v3_large"))
        assert "POST /model/mobilenet_v3_large/predict" in [
            f"{r.method} {r.path}" for r in api.requests
        ]
        assert "/predict" not in api.paths()


def test_the_backends_own_4xx_message_is_shown(backend_server, images, monkeypatch):
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    bad_url = f"{images.url}/notes.txt"  # served as image/jpeg, but it is text
    direct = requests.post(f"{backend_server.url}/predict", json={"url": bad_url}, timeout=60)
    assert 400 <= direct.status_code < 500
    at = classify_url(open_page(), bad_url)
    assert not at.exception
    error = direct.json()["error"]
    (shown,) = texts(at.error)
    assert shown.startswith("That file is not a picture") and error["message"] not in shown
    assert details(at) == [f"HTTP {direct.status_code}, code {error['code']}: {error['message']}"]
    assert shown_model(at) is None


def test_v2_compare_shows_each_models_own_answer(backend_server, images, monkeypatch):
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    image_url = f"{images.url}/cat.jpg"
    at = classify_url(compare_all(open_page()), image_url)
    assert not at.exception
    assert not at.error
    for model in MODELS:
        expected = backend_answer(backend_server.url, image_url, model)
        shown = card(at, model)
        top = expected["predictions"][0]
        assert shown["markdown"][1].startswith(f"1. **{top['label']}** ")
        assert len(shown["markdown"][1].splitlines()) == 5
        assert " on the backend · " in shown["caption"][0]
    assert {model for model, _, _ in compare_rows(at)} == set(MODELS)


def test_an_example_photo_gets_the_backends_answer_for_that_photo(backend_server, monkeypatch):
    monkeypatch.setenv("SERVING_URL", backend_server.url)
    monkeypatch.setenv("MODEL_PICKER", "off")
    example = EXAMPLES[0]
    expected = requests.post(
        f"{backend_server.url}/model/resnet18/predict",
        files={"image": (example.path.name, example.read(), "image/jpeg")},
        timeout=60,
    ).json()
    at = classify_example(open_page(), example.key)
    assert_shows(at, expected)
