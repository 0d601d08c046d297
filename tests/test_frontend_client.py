"""The frontend's backend client against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from frontend.auth import IdTokenSessions
from frontend.client import (
    BackendAuthError,
    BackendClient,
    BackendFailed,
    BackendNotReady,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from tests.frontend_servers import Reply, ScriptedServer, TokenEndpoint, error_reply, json_reply

PREDICTION = {
    "model": "resnet18",
    "category": "tabby",
    "predictions": [
        {"label": "tabby", "index": 281, "probability": 0.7},
        {"label": "tiger cat", "index": 282, "probability": 0.2},
    ],
    "timings_ms": {"fetch": 10.0, "total": 42.5},
}


@pytest.fixture
def backend():
    with ScriptedServer(
        {
            ("GET", "/models"): json_reply(["resnet18", "mobilenet_v3_large"]),
            ("GET", "/models/resnet18"): json_reply({"id": "resnet18", "untrained": False}),
            ("POST", "/model/resnet18/predict"): json_reply(PREDICTION),
            ("POST", "/model/mobilenet_v3_large/predict"): json_reply(
                {**PREDICTION, "model": "mobilenet_v3_large"}
            ),
        }
    ) as server:
        yield server


def serve(
    reply: Reply, method: str = "POST", path: str = "/model/resnet18/predict"
) -> ScriptedServer:
    return ScriptedServer({(method, path): reply})


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


# --- the routes ---------------------------------------------------------------------------


def test_lists_models_and_reads_metadata(backend):
    client = BackendClient(backend.url)
    assert client.list_models() == ["resnet18", "mobilenet_v3_large"]
    assert client.model_info("resnet18") == {"id": "resnet18", "untrained": False}


def test_predict_url_goes_to_the_models_own_path(backend):
    prediction = BackendClient(backend.url).predict_url(
        "https://example.com/cat.jpg", model="resnet18", top_k=3
    )
    sent = backend.requests[-1]
    # Every backend serves /model/<id>/predict, and the v3 gateway nothing else.
    assert (sent.method, sent.path) == ("POST", "/model/resnet18/predict")
    assert json.loads(sent.body) == {"url": "https://example.com/cat.jpg", "top_k": 3}
    assert prediction.model == "resnet18"
    assert prediction.top.label == "tabby"
    assert [p.probability for p in prediction.labels] == [0.7, 0.2]
    assert prediction.total_ms == 42.5
    assert prediction.untrained is False


def test_predict_image_sends_a_multipart_upload(backend):
    prediction = BackendClient(backend.url).predict_image(
        b"\xff\xd8jpeg-bytes",
        filename="cat.jpg",
        content_type="image/jpeg",
        model="mobilenet_v3_large",
    )
    sent = backend.requests[-1]
    assert sent.path == "/model/mobilenet_v3_large/predict"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert b'name="image"; filename="cat.jpg"' in sent.body
    assert b"\xff\xd8jpeg-bytes" in sent.body
    assert b'name="model"' not in sent.body  # the path names it
    assert prediction.model == "mobilenet_v3_large"


def test_a_model_id_is_quoted_into_the_path(backend):
    with pytest.raises(BackendFailed, match="HTTP 404"):
        BackendClient(backend.url).predict_url("https://example.com/a.jpg", model="a/../b")
    assert backend.requests[-1].path == "/model/a%2F..%2Fb/predict"


def test_a_prediction_needs_a_model(backend):
    with pytest.raises(ValueError, match="model id"):
        BackendClient(backend.url).predict_url("https://example.com/a.jpg", model="")
    assert backend.requests == []


def test_untrained_answers_are_flagged():
    with serve(json_reply({**PREDICTION, "untrained": True})) as server:
        assert (
            BackendClient(server.url)
            .predict_url("https://example.com/a.jpg", model="resnet18")
            .untrained
        )


# --- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "url_not_allowed"),
        (404, "unknown_model"),
        (413, "payload_too_large"),
        (415, "unsupported_media"),
        (422, "undecodable_image"),
        (502, "upstream_error"),  # the image URL failed: about the user's input
        (504, "upstream_timeout"),
    ],
)
def test_the_backends_own_message_is_kept_for_client_mistakes(status, code):
    message = f"the backend explains {code}"
    with (
        serve(error_reply(status, code, message)) as server,
        pytest.raises(BackendRejected) as caught,
    ):
        BackendClient(server.url).predict_url("https://example.com/a.jpg", model="resnet18")
    assert str(caught.value) == message
    assert (caught.value.status, caught.value.code) == (status, code)


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (error_reply(503, "not_ready", "loading resnet18"), BackendNotReady, "not ready yet"),
        (error_reply(503, "busy", "retry in a few seconds"), BackendNotReady, "busy with other"),
        (error_reply(500, "internal", "inference failed"), BackendFailed, "inference failed"),
        (Reply(503, b"<html>Service Unavailable</html>", "text/html"), BackendUnavailable, "503"),
        (Reply(429, b"Rate exceeded.", "text/plain"), BackendUnavailable, "429"),
        (Reply(403, b"<html>Forbidden</html>", "text/html"), BackendAuthError, "private"),
        (Reply(401, b"", "text/plain"), BackendAuthError, "BACKEND_AUTH"),
        (Reply(404, b"", "text/plain"), BackendFailed, "SERVING_URL"),
        (Reply(200, b"<html>hello</html>", "text/html"), BackendFailed, "not JSON"),
        (json_reply({"model": "resnet18"}), BackendFailed, "not a prediction"),
        (json_reply({**PREDICTION, "predictions": []}), BackendFailed, "not a prediction"),
    ],
)
def test_other_answers_become_plain_typed_errors(reply, error, text):
    with serve(reply) as server, pytest.raises(error, match=text):
        BackendClient(server.url).predict_url("https://example.com/a.jpg", model="resnet18")


def test_a_model_list_that_is_not_ids_is_refused():
    reply = json_reply({"models": ["resnet18"]})
    with serve(reply, "GET", "/models") as server, pytest.raises(BackendFailed, match="list"):
        BackendClient(server.url).list_models()


def test_an_oversized_answer_is_cut_off():
    with serve(json_reply(["x" * 5000])) as server, pytest.raises(BackendFailed, match="larger"):
        BackendClient(server.url, max_response_bytes=1000).predict_url(
            "https://e.com/a", model="resnet18"
        )


def test_a_backend_that_is_down_is_unavailable():
    url = closed_port_url()
    with pytest.raises(BackendUnavailable, match="Cannot reach the backend") as caught:
        BackendClient(url).list_models()
    assert url in str(caught.value)


def test_a_silent_backend_times_out_at_the_deadline():
    with serve(json_reply(PREDICTION, delay_s=5)) as server:
        start = time.monotonic()
        with pytest.raises(BackendTimeout, match=r"within 0\.5 s"):
            BackendClient(server.url, timeout_s=0.5).predict_url(
                "https://example.com/a.jpg", model="resnet18"
            )
    assert time.monotonic() - start < 3


def test_an_answer_that_keeps_trickling_is_cut_at_the_total_deadline():
    # Each piece comes well within the read timeout; only a total deadline stops it.
    with serve(json_reply(PREDICTION, delay_s=0.3, trickle=20)) as server:
        start = time.monotonic()
        with pytest.raises(BackendTimeout):
            BackendClient(server.url, timeout_s=1.0).predict_url(
                "https://example.com/a.jpg", model="resnet18"
            )
    assert time.monotonic() - start < 3


# --- ID tokens ----------------------------------------------------------------------------


@pytest.fixture
def tokens(monkeypatch, tmp_path):
    """google-auth's service-account path, against a token endpoint on 127.0.0.1."""
    with TokenEndpoint() as endpoint:
        key = endpoint.key_file(tmp_path / "key.json")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
        yield endpoint


def test_no_authorization_header_without_id_tokens(backend):
    BackendClient(backend.url).list_models()
    assert "authorization" not in backend.requests[-1].headers


def test_an_id_token_goes_with_every_call_and_is_fetched_once(backend, tokens):
    client = BackendClient(backend.url, sessions=IdTokenSessions(backend.url))
    client.list_models()
    client.predict_url("https://example.com/a.jpg", model="resnet18")
    assert len(tokens.issued) == 1  # reused while it is valid
    assert [r.headers["authorization"] for r in backend.requests] == [
        f"Bearer {tokens.issued[0]}"
    ] * 2


def test_the_token_is_for_the_audience(backend, tokens):
    from google.auth import jwt

    BackendClient(backend.url, sessions=IdTokenSessions("https://b.run.app")).list_models()
    (grant,) = tokens.server.requests
    # google-auth asks for a token for the audience (target_audience in its signed assertion).
    assertion = dict(p.split("=", 1) for p in grant.body.decode().split("&"))["assertion"]
    assert jwt.decode(assertion, verify=False)["target_audience"] == "https://b.run.app"


def test_a_token_close_to_its_expiry_is_replaced_before_it_is_sent(backend, monkeypatch, tmp_path):
    # Two minutes left: within google-auth's refresh threshold, so every call gets a new one.
    with TokenEndpoint(lifetime_s=120) as endpoint:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", endpoint.key_file(tmp_path / "k"))
        client = BackendClient(backend.url, sessions=IdTokenSessions(backend.url))
        client.list_models()
        client.list_models()
    assert len(endpoint.issued) == 2
    assert [r.headers["authorization"] for r in backend.requests] == [
        f"Bearer {token}" for token in endpoint.issued
    ]


def test_no_credentials_means_no_call_and_a_clear_message(backend, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(BackendAuthError, match=r"ID token.*GOOGLE_APPLICATION_CREDENTIALS"):
        BackendClient(backend.url, sessions=IdTokenSessions(backend.url)).list_models()
    assert backend.requests == []


def test_a_token_endpoint_that_refuses_means_no_call_and_a_clear_message(
    backend, monkeypatch, tmp_path
):
    with ScriptedServer({("POST", "/token"): error_reply(400, "invalid_grant", "no")}) as refuse:
        endpoint = TokenEndpoint()
        endpoint.server = refuse  # the key points at a server that refuses every grant
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", endpoint.key_file(tmp_path / "k"))
        with pytest.raises(BackendAuthError, match="ID token"):
            BackendClient(backend.url, sessions=IdTokenSessions(backend.url)).list_models()
    assert backend.requests == []
