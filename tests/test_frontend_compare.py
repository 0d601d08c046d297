"""The compare view, the example photos and the camera, against stand-in backends on 127.0.0.1."""

from __future__ import annotations

import json
import time

import pytest

from frontend.client import BackendClient
from frontend.compare import ask_all
from frontend.examples import EXAMPLES
from frontend.present import UNTRAINED_SHORT
from tests.frontend_page import (
    card,
    chart_rows,
    classify_example,
    classify_url,
    compare_all,
    compare_rows,
    details,
    open_page,
    reset_page,
    shown_images,
    shown_model,
    take_photo,
    texts,
)
from tests.frontend_servers import JPEG, Reply, ScriptedServer, error_reply, json_reply
from tests.test_frontend_page import IMAGE_URL

MODELS = ["resnet152", "vgg16", "swin_b"]


def answer(model: str, *labels: tuple[str, float], total_ms: float = 100.0, **extra) -> dict:
    return {
        "model": model,
        "category": labels[0][0],
        "predictions": [
            {"label": label, "index": i, "probability": p} for i, (label, p) in enumerate(labels)
        ],
        "timings_ms": {"total": total_ms},
        **extra,
    }


ANSWERS = {
    "resnet152": answer(
        "resnet152",
        ("tabby", 0.6),
        ("tiger cat", 0.2),
        ("Egyptian cat", 0.1),
        ("lynx", 0.05),
        ("Persian cat", 0.02),
        total_ms=120,
    ),
    "vgg16": answer(
        "vgg16",
        ("tiger cat", 0.5),
        ("tabby", 0.3),
        ("lynx", 0.1),
        ("Egyptian cat", 0.04),
        ("cougar", 0.02),
        total_ms=340,
    ),
    "swin_b": answer(
        "swin_b",
        ("tabby", 0.9),
        ("tiger cat", 0.05),
        ("Egyptian cat", 0.02),
        ("Persian cat", 0.01),
        ("lynx", 0.005),
        total_ms=910,
    ),
}


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    reset_page(monkeypatch)


def backend(models=MODELS, **replies: Reply) -> ScriptedServer:
    """Serves `models`; `<model>=Reply(...)` replaces that model's answer."""
    script = {("GET", "/models"): json_reply(models)}
    for model in models:
        script[("POST", f"/model/{model}/predict")] = replies.get(model, json_reply(ANSWERS[model]))
    return ScriptedServer(script)


def predicted(server: ScriptedServer) -> list[str]:
    return sorted(server.paths("POST"))


# --- compare ---------------------------------------------------------------------------------


def test_compare_shows_every_models_top5_and_times_side_by_side(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    assert not at.exception
    assert predicted(server) == sorted(f"/model/{m}/predict" for m in MODELS)
    assert shown_images(at) == [[IMAGE_URL]]  # one image, every model's answer about it
    vgg16 = card(at, "vgg16")
    assert vgg16["markdown"] == [
        "**`vgg16`**",
        "1. **tiger cat** 50.0%\n2. **tabby** 30.0%\n3. **lynx** 10.0%\n"
        "4. **Egyptian cat** 4.0%\n5. **cougar** 2.0%",
    ]
    assert vgg16["caption"][0].startswith("340 ms on the backend · ")
    assert card(at, "swin_b")["caption"][0].startswith("910 ms on the backend · ")
    assert card(at, "resnet152")["markdown"][1].startswith("1. **tabby** 60.0%")


def test_the_compare_chart_lines_up_each_models_top_classes(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    # Every class in some model's top 3, best first (by its best probability), with each
    # model's probability where that model ranked it; cougar (only vgg16's 5th) is left out.
    assert compare_rows(at) == [
        ("resnet152", "tabby", 0.6),
        ("vgg16", "tabby", 0.3),
        ("swin_b", "tabby", 0.9),
        ("resnet152", "tiger cat", 0.2),
        ("vgg16", "tiger cat", 0.5),
        ("swin_b", "tiger cat", 0.05),
        ("resnet152", "Egyptian cat", 0.1),
        ("vgg16", "Egyptian cat", 0.04),
        ("swin_b", "Egyptian cat", 0.02),
        ("resnet152", "lynx", 0.05),
        ("vgg16", "lynx", 0.1),
        ("swin_b", "lynx", 0.005),
    ]


def test_a_failing_model_shows_its_own_error_and_the_others_their_answers(monkeypatch):
    broken = error_reply(500, "internal", "swin_b's forward pass failed")
    with backend(swin_b=broken) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    assert not at.exception
    assert card(at, "swin_b")["error"] == [
        "Something went wrong on the classifier's side. Try again in a moment."
    ]
    assert details(at) == ["HTTP 500, code internal: The backend failed (HTTP 500): "
                           "swin_b's forward pass failed"]  # fmt: skip
    assert card(at, "resnet152")["error"] == [] and card(at, "vgg16")["error"] == []
    assert card(at, "vgg16")["markdown"][1].startswith("1. **tiger cat** 50.0%")
    assert {model for model, _, _ in compare_rows(at)} == {"resnet152", "vgg16"}


def test_a_slow_model_times_out_on_its_own(monkeypatch):
    with backend(vgg16=json_reply(ANSWERS["vgg16"], delay_s=3)) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        monkeypatch.setenv("BACKEND_TIMEOUT_S", "0.5")
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    assert any("took too long" in e for e in card(at, "vgg16")["error"])
    assert any("did not answer within 0.5 s" in d for d in details(at))
    assert card(at, "swin_b")["error"] == []


def test_one_cause_every_model_shares_is_said_once(monkeypatch):
    message = "the image URL answered 404"
    bad = error_reply(502, "upstream_error", message)
    with backend(**dict.fromkeys(MODELS, bad)) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    assert not at.exception
    (error,) = texts(at.error)  # not one per model
    assert "could not be downloaded from that link" in error
    assert details(at) == [f"HTTP 502, code upstream_error: {message}"]
    assert all(card(at, m)["caption"] == ["No answer: see above."] for m in MODELS)


def test_the_comparison_stays_on_rerun_without_asking_again(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
        at.run()
    assert len(server.paths("POST")) == len(MODELS)
    assert card(at, "swin_b")["markdown"][1].startswith("1. **tabby** 90.0%")


def test_untrained_answers_are_labelled_in_their_cards(monkeypatch):
    untrained = json_reply({**ANSWERS["vgg16"], "untrained": True})
    with backend(vgg16=untrained) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_url(compare_all(open_page()), IMAGE_URL)
    assert card(at, "vgg16")["warning"] == [UNTRAINED_SHORT]
    assert card(at, "resnet152")["warning"] == []


def test_the_picker_is_disabled_while_comparing(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        at.selectbox(key="model").select("vgg16").run()
        at = compare_all(at)
        assert at.selectbox(key="model").disabled
        at.toggle(key="compare").set_value(False).run()
        at = classify_url(at, IMAGE_URL)  # back to one model: the user's pick
    assert shown_model(at) == "vgg16"
    assert server.paths("POST") == ["/model/vgg16/predict"]


@pytest.mark.parametrize(("picker", "models"), [("auto", ["resnet152"]), ("off", MODELS)])
def test_no_compare_without_a_choice_of_models(monkeypatch, picker, models):
    with backend(models) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        monkeypatch.setenv("MODEL_PICKER", picker)
        at = open_page()
    assert not at.exception and at.button  # the page drew (its example buttons)
    assert [t.key for t in at.toggle] == []  # and no compare switch


def test_requests_run_in_parallel_and_come_back_as_they_finish():
    delays = {"resnet152": 1.2, "vgg16": 0.1, "swin_b": 0.6}
    script = {
        ("POST", f"/model/{m}/predict"): json_reply(ANSWERS[m], delay_s=delays[m]) for m in MODELS
    }
    with ScriptedServer(script) as server:
        client = BackendClient(server.url)
        start = time.monotonic()
        arrived = []
        for result in ask_all(MODELS, lambda m: client.predict_url(IMAGE_URL, model=m)):
            arrived.append((result.model, time.monotonic() - start))
    assert [model for model, _ in arrived] == ["vgg16", "swin_b", "resnet152"]
    assert arrived[0][1] < 0.5  # the fastest is handed over before the slowest is done
    assert arrived[-1][1] < 1.2 + 0.5  # the slowest sets the wait, not the sum (1.9 s)


# --- examples and camera ----------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.key)
def test_one_click_classifies_an_example_photo(monkeypatch, example):
    with backend(["resnet152"]) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_example(open_page(), example.key)
        (sent,) = [r for r in server.requests if r.method == "POST"]
    assert not at.exception and not at.error
    # The photo itself goes up as a file, from the page's own copy: no image URL, no network.
    assert example.read() in sent.body
    assert f'filename="{example.key}.jpg"'.encode() in sent.body
    assert shown_model(at) == "resnet152"
    assert chart_rows(at)[0] == ("tabby", 0.6)


def test_an_example_can_be_compared_across_models(monkeypatch):
    with backend() as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = classify_example(compare_all(open_page()), "coffee")
    bodies = [r.body for r in server.requests if r.method == "POST"]
    assert len(bodies) == len(MODELS)
    assert all(EXAMPLES[1].read() in body for body in bodies)
    assert all(card(at, m) for m in MODELS)


def test_a_camera_photo_is_classified(monkeypatch):
    with backend(["resnet152"]) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        at = open_page()
        assert not at.camera_input  # no camera until its tab is open: no prompt on a visit
        at = take_photo(at, JPEG)
        (sent,) = [r for r in server.requests if r.method == "POST"]
    assert not at.exception and not at.error
    assert JPEG in sent.body and b'filename="camera.jpg"' in sent.body
    assert b"Content-Type: image/jpeg" in sent.body
    assert shown_model(at) == "resnet152"


def test_the_url_is_still_sent_as_a_url(monkeypatch):
    with backend(["resnet152"]) as server:
        monkeypatch.setenv("SERVING_URL", server.url)
        classify_url(open_page(), IMAGE_URL)
        (sent,) = [r for r in server.requests if r.method == "POST"]
    assert json.loads(sent.body) == {"url": IMAGE_URL, "top_k": 5}


def test_each_model_keeps_its_colour_and_the_legend_follows_the_bars():
    from frontend import present
    from frontend.client import _prediction

    def spec(answered: list[str]) -> dict:
        frame = present.compare_frame({m: _prediction(ANSWERS[m]) for m in answered})
        return present.compare_chart(frame, MODELS).to_dict()["layer"][0]["encoding"]

    every, some = spec(MODELS), spec(["swin_b"])  # resnet152 and vgg16 failed in the second
    for encoding in (every, some):
        # Colours by the served models' order, not by who answered: swin_b is green in both.
        assert encoding["color"]["scale"]["domain"] == MODELS
        assert encoding["color"]["sort"] == MODELS == encoding["yOffset"]["sort"]
        assert encoding["color"]["legend"]["orient"] == "top"  # above, never cut at the side
    assert every["color"]["scale"]["range"] == some["color"]["scale"]["range"]
    assert len(set(every["color"]["scale"]["range"])) == len(MODELS)
