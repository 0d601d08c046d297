"""The page's states against stand-in backends on 127.0.0.1: config, bad input, errors, labels.

The flows against the real backend are in test_frontend_flows.py.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.frontend_page import (
    chart_rows,
    classify_upload,
    classify_url,
    details,
    open_page,
    reset_page,
    shown_images,
    shown_model,
    texts,
)
from tests.frontend_servers import (
    JPEG,
    Reply,
    ScriptedServer,
    TokenEndpoint,
    error_reply,
    json_reply,
)

IMAGE_URL = "https://images.example.com/cat.jpg"
PREDICTION = {
    "model": "resnet152",
    "category": "tabby",
    "predictions": [
        {"label": label, "index": i, "probability": p}
        for i, (label, p) in enumerate(
            [
                ("tabby", 0.61),
                ("tiger cat", 0.2),
                ("Egyptian cat", 0.1),
                ("lynx", 0.05),
                ("Persian cat", 0.02),
                ("space heater", 0.01),
            ]
        )
    ],
    "timings_ms": {"fetch": 100.0, "total": 250.0},
}
META = {"id": "resnet152", "architecture": "resnet152", "parameters": 60192808, "untrained": False}
UNTRAINED = "Untrained demo weights"


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    reset_page(monkeypatch)


def stub_backend(**replies: Reply) -> ScriptedServer:
    """One model, resnet152; `predict=...` / `models=...` / `meta=...` replace its answers."""
    return ScriptedServer(
        {
            ("GET", "/models"): replies.get("models", json_reply(["resnet152"])),
            ("GET", "/models/resnet152"): replies.get("meta", json_reply(META)),
            ("POST", "/model/resnet152/predict"): replies.get("predict", json_reply(PREDICTION)),
        }
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --- configuration ----------------------------------------------------------------------------


def test_without_serving_url_the_page_says_what_to_set():
    at = open_page()
    assert not at.exception
    assert any("not configured" in e and "SERVING_URL" in e for e in texts(at.error))
    assert not at.text_input  # nothing to use until configured


def test_a_retired_name_is_named_on_the_page_with_its_replacement(monkeypatch):
    monkeypatch.setenv("SERVING_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("API_GATEWAY", "http://127.0.0.1:1")
    at = open_page()
    assert not at.exception
    assert any("API_GATEWAY is retired: set SERVING_URL" in e for e in texts(at.error))


def test_a_wrong_picker_setting_is_named(monkeypatch):
    monkeypatch.setenv("SERVING_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("MODEL_PICKER", "sometimes")
    at = open_page()
    assert not at.exception
    assert any("MODEL_PICKER='sometimes'" in e for e in texts(at.error))


# --- a working stand-in backend ------------------------------------------------------------


def test_a_prediction_shows_sentence_model_time_image_and_top5_chart(monkeypatch):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), IMAGE_URL)
    assert not at.exception
    assert not at.error
    assert "This looks like **tabby** (61.0% probability)." in texts(at.markdown)
    assert shown_model(at) == "resnet152"
    assert any("250 ms on the backend" in c for c in texts(at.caption))
    assert shown_images(at) == [[IMAGE_URL]]  # the browser loads it itself
    assert chart_rows(at) == [
        ("tabby", 0.61),
        ("tiger cat", 0.2),
        ("Egyptian cat", 0.1),
        ("lynx", 0.05),
        ("Persian cat", 0.02),
    ]
    assert not any(UNTRAINED in w for w in texts(at.warning))


def test_an_unsure_top_prediction_is_called_a_guess(monkeypatch):
    unsure = {**PREDICTION, "predictions": [{"label": "lynx", "index": 1, "probability": 0.04}]}
    with stub_backend(predict=json_reply(unsure)) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), IMAGE_URL)
    assert "Best guess: **lynx**, but the model is unsure (4.0% probability)." in texts(at.markdown)


def test_the_result_stays_when_the_page_reruns(monkeypatch):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), IMAGE_URL)
        at.run()
    assert shown_model(at) == "resnet152"
    assert len(backend.paths("POST")) == 1  # a rerun shows the result, it does not resend


def test_an_upload_is_sent_as_the_image_file(monkeypatch):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_upload(open_page(), "sky.jpg", JPEG, "image/jpeg")
        (sent,) = [r for r in backend.requests if r.method == "POST"]
    assert not at.exception
    assert JPEG in sent.body and b'filename="sky.jpg"' in sent.body
    assert shown_model(at) == "resnet152"


def test_untrained_demo_weights_are_labelled_in_metadata_and_result(monkeypatch):
    with stub_backend(
        meta=json_reply({**META, "untrained": True}),
        predict=json_reply({**PREDICTION, "untrained": True}),
    ) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = open_page()
        assert [UNTRAINED in w for w in texts(at.warning)] == [True]  # before any request
        at = classify_url(at, IMAGE_URL)
    # Said once, in a line: not a second box under the answer.
    assert [UNTRAINED in w for w in texts(at.warning)] == [True]
    # Random weights can be "sure"; the sentence must not present it as a finding.
    assert "The untrained demo model picks **tabby** (61.0%), which is a random answer." in (
        texts(at.markdown)
    )


def test_an_untrained_answer_is_labelled_even_without_metadata(monkeypatch):
    with stub_backend(
        meta=Reply(404), predict=json_reply({**PREDICTION, "untrained": True})
    ) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), IMAGE_URL)
    assert not at.exception
    assert any("untrained demo model" in m for m in texts(at.markdown))


# --- input refused before sending -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "Enter the URL of an image"),
        ("   ", "Enter the URL of an image"),
        ("ftp://example.com/cat.jpg", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("cat.jpg", "must start with http:// or https://"),
        ("https:///cat.jpg", "no host name"),
        ("https://example.com/a cat.jpg", "cannot contain spaces"),
        ("https://example.com/" + "a" * 2100, "too long"),
    ],
)
def test_a_bad_url_is_refused_before_sending(monkeypatch, url, message):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), url)
    assert not at.exception
    assert any(message in w for w in texts(at.warning))
    assert backend.paths("POST") == []
    assert shown_model(at) is None


# --- the backend says no, is down or is slow -----------------------------------------------


def test_a_4xx_is_said_plainly_with_the_backends_message_folded_away(monkeypatch):
    message = "only public http(s) addresses are allowed: 10.0.0.1 is private"
    with stub_backend(predict=error_reply(400, "url_not_allowed", message)) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), "http://10.0.0.1/cat.jpg")
    assert not at.exception
    (error,) = texts(at.error)
    assert "only downloads from public web sites" in error and "upload it instead" in error
    assert message not in error
    assert details(at) == [f"HTTP 400, code url_not_allowed: {message}"]
    assert shown_model(at) is None


def test_a_backend_that_is_down_gets_a_plain_message(monkeypatch):
    monkeypatch.setenv("SERVING_URL", closed_port_url())
    at = open_page()
    assert not at.exception
    assert any("cannot be reached right now" in e for e in texts(at.error))
    assert any("Cannot reach the backend" in d for d in details(at))
    # Every request is routed by model id: without the list, nothing can be sent.
    assert any("Nothing can be classified" in i for i in texts(at.info))
    assert not at.text_input


def test_a_slow_backend_gets_a_plain_message(monkeypatch):
    with stub_backend(predict=json_reply(PREDICTION, delay_s=3)) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        monkeypatch.setenv("BACKEND_TIMEOUT_S", "0.5")
        at = classify_url(open_page(), IMAGE_URL)
    assert not at.exception
    assert any("took too long to answer" in e for e in texts(at.error))
    assert any("did not answer within 0.5 s" in d for d in details(at))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (error_reply(503, "not_ready", "still loading resnet152"), "still loading"),
        (Reply(503, b"<html>Service Unavailable</html>", "text/html"), "cannot be reached"),
        (Reply(403, b"<html>Forbidden</html>", "text/html"), "not allowed to use"),
        (Reply(200, b"<html>a login page</html>", "text/html"), "went wrong"),
    ],
)
def test_other_failures_get_plain_messages(monkeypatch, reply, message):
    with stub_backend(predict=reply) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_url(open_page(), IMAGE_URL)
    assert not at.exception
    (error,) = texts(at.error)
    assert message in error and "HTTP" not in error and "<html>" not in error


# --- ID tokens ---------------------------------------------------------------------------------


def test_with_id_token_auth_a_missing_credential_is_explained(monkeypatch, tmp_path):
    # google-auth finds no credentials: not on Cloud Run, and a key file that does not exist.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never the real metadata server
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        monkeypatch.setenv("BACKEND_AUTH", "id_token")
        at = open_page()
        assert not at.exception
        assert any("not allowed to use the classifier" in e for e in texts(at.error))
        assert any("could not get a Google ID token" in d for d in details(at))
        assert backend.requests == []  # nothing goes out without the token


def test_with_id_token_auth_every_call_carries_one_google_id_token(monkeypatch, tmp_path):
    with TokenEndpoint() as tokens, stub_backend() as backend:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", tokens.key_file(tmp_path / "key"))
        monkeypatch.setenv("SERVING_URL", backend.url)
        monkeypatch.setenv("BACKEND_AUTH", "id_token")
        at = classify_url(open_page(), IMAGE_URL)
        classify_url(open_page(), IMAGE_URL)  # another session of the same process
    assert not at.exception
    assert shown_model(at) == "resnet152"
    (token,) = tokens.issued  # one token for the process, not one per call or per session
    assert {r.headers["authorization"] for r in backend.requests} == {f"Bearer {token}"}
    assert len(backend.requests) == 4  # list, metadata, and one prediction per session


def test_the_model_list_is_cached_between_reruns(monkeypatch):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = open_page()
        at.run()
        open_page()  # another session of the same process
    assert backend.paths("GET").count("/models") == 1


def test_the_prediction_request_body(monkeypatch):
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        classify_url(open_page(), f"  {IMAGE_URL} ")
        (sent,) = [r for r in backend.requests if r.method == "POST"]
    # One model, by path (every backend serves /model/<id>/predict); the URL is sent trimmed.
    assert sent.path == "/model/resnet152/predict"
    assert json.loads(sent.body) == {"url": IMAGE_URL, "top_k": 5}


def test_an_undecodable_upload_shows_the_backends_message_and_no_image(monkeypatch):
    message = "the upload is not an image; supported formats: BMP, GIF, JPEG, PNG, WEBP"
    with stub_backend(predict=error_reply(422, "undecodable_image", message)) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_upload(open_page(), "notes.png", b"just text", "image/png")
    assert not at.exception
    assert texts(at.error) == ["The image could not be read. Try another image, or save this "
                               "one again as a plain JPEG, PNG, WebP, GIF or BMP."]  # fmt: skip
    assert any(message in d for d in details(at))
    assert shown_images(at) == []


def test_v3_with_the_gateway_down_says_so_and_offers_nothing_to_send(monkeypatch):
    monkeypatch.setenv("SERVING_URL", closed_port_url())  # the gateway's URL
    at = open_page()
    assert not at.exception
    assert any("cannot be reached" in e for e in texts(at.error))
    assert not at.text_input  # without the model list, no request can be routed


def test_v2_sends_the_sessions_choice_with_the_request(monkeypatch):
    with ScriptedServer(
        {
            ("GET", "/models"): json_reply(["resnet152", "vgg16"]),
            ("POST", "/model/vgg16/predict"): json_reply({**PREDICTION, "model": "vgg16"}),
        }
    ) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        monkeypatch.setenv("MODEL_PICKER", "on")
        at = open_page()
        at.selectbox(key="model").select("vgg16").run()
        classify_url(at, IMAGE_URL)
        (sent,) = [r for r in backend.requests if r.method == "POST"]
    assert sent.path == "/model/vgg16/predict"


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ({**META, "num_classes": 1000, "imagenet_acc1": 82.3}, "one of 1,000 ImageNet categories"),
        # A user's own classifier: its own classes, no ImageNet accuracy.
        ({**META, "num_classes": 3, "imagenet_acc1": None}, "one of 3 categories."),
    ],
)
def test_the_heading_counts_the_models_own_classes(monkeypatch, meta, said):
    with stub_backend(meta=json_reply(meta)) as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = open_page()
    assert any(said in c for c in texts(at.caption))
    if meta["num_classes"] != 1000:
        assert not any("ImageNet" in c or "1,000" in c for c in texts(at.caption))
