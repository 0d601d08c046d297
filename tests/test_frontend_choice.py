"""The session's model choice: kept under its own key, through a failing model list and back.

Against stand-in backends on 127.0.0.1 whose model list can be made to fail between runs.
"""

from __future__ import annotations

import pytest
import streamlit as st

from tests.frontend_page import classify_url, details, open_page, reset_page, shown_model, texts
from tests.frontend_servers import Reply, ScriptedServer, error_reply, json_reply
from tests.test_frontend_page import IMAGE_URL, PREDICTION

MODELS = ["resnet152", "vgg16", "swin_b"]
LIST_DOWN = error_reply(503, "not_ready", "still loading swin_b")


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    reset_page(monkeypatch)


def backend(models: list[str] = MODELS) -> ScriptedServer:
    """Serves `models` (the first the default) and a prediction from each, under its name."""
    script = {("GET", "/models"): json_reply(models)}
    for model in MODELS:
        script[("POST", f"/model/{model}/predict")] = json_reply({**PREDICTION, "model": model})
    return ScriptedServer(script)


def model_list_fails(server: ScriptedServer, reply: Reply = LIST_DOWN) -> None:
    server.script[("GET", "/models")] = reply
    st.cache_data.clear()  # as if the cached list had expired: the next run asks again


def model_list_recovers(server: ScriptedServer, models: list[str] = MODELS) -> None:
    server.script[("GET", "/models")] = json_reply(models)
    st.cache_data.clear()


def predicted_paths(server: ScriptedServer) -> list[str]:
    return server.paths("POST")


def test_the_choice_survives_a_failing_model_list_and_its_recovery(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        at.selectbox(key="model").select("vgg16").run()

        model_list_fails(server)
        at.run()
        assert not at.exception
        assert any("Could not load the list of models" in e for e in texts(at.error))
        assert any("`vgg16`, the model you chose" in i for i in texts(at.info))
        at = classify_url(at, IMAGE_URL)  # still the user's pick, not the default
        assert shown_model(at) == "vgg16"

        model_list_recovers(server)
        at.run()
        assert not at.error
        assert at.selectbox(key="model").value == "vgg16"  # the picker shows the pick again
        at = classify_url(at, IMAGE_URL)
    assert predicted_paths(server) == ["/model/vgg16/predict"] * 2
    assert shown_model(at) == "vgg16"


def test_without_any_model_list_the_page_says_so_and_sends_nothing(monkeypatch):
    with backend() as server:
        model_list_fails(server)
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        assert not at.exception
        assert any("models are still loading" in e for e in texts(at.error))
        assert any("still loading swin_b" in d for d in details(at))
        assert any("Nothing can be classified" in i for i in texts(at.info))
        assert not at.text_input and not at.button  # nothing to send, no guessed model

        model_list_recovers(server)
        at.run()
        assert not at.error
        assert at.selectbox(key="model").value == "resnet152"  # now the user can choose
        at = classify_url(at, IMAGE_URL)
    assert predicted_paths(server) == ["/model/resnet152/predict"]


def test_a_chosen_model_that_is_no_longer_served_is_said_and_not_sent(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        at.selectbox(key="model").select("swin_b").run()
        model_list_recovers(server, ["resnet152", "vgg16"])  # a redeploy without swin_b
        at.run()
        assert any(
            "`swin_b`, the model you chose, is no longer served" in w for w in texts(at.warning)
        )
        assert at.selectbox(key="model").value == "resnet152"
        at = classify_url(at, IMAGE_URL)
    assert predicted_paths(server) == ["/model/resnet152/predict"]


def test_a_failing_list_in_one_session_leaves_anothers_choice_alone(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        alice, bob = open_page(), open_page()
        alice.selectbox(key="model").select("swin_b").run()
        bob.selectbox(key="model").select("vgg16").run()
        model_list_fails(server)
        alice.run()
        bob.run()
        alice, bob = classify_url(alice, IMAGE_URL), classify_url(bob, IMAGE_URL)
    assert (shown_model(alice), shown_model(bob)) == ("swin_b", "vgg16")


@pytest.mark.parametrize(
    ("picker", "models", "has_picker"),
    [
        ("auto", ["resnet152"], False),
        ("auto", MODELS, True),
        ("on", ["resnet152"], True),
        ("off", MODELS, False),
    ],
)
def test_one_setting_says_whether_there_is_a_picker(monkeypatch, picker, models, has_picker):
    with backend(models) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        monkeypatch.setenv("MODEL_PICKER", picker)
        at = classify_url(open_page(), IMAGE_URL)
    assert bool(at.selectbox) is has_picker
    # Without a picker, the backend's default: the first model of its list, by path.
    assert predicted_paths(server) == [f"/model/{models[0]}/predict"]
