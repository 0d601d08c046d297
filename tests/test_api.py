"""The HTTP contract through the app factory, and every bad input of docs/bad-inputs.md."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.app import create_app
from backend.errors import NotReady
from backend.registry import ModelRegistry
from backend.services import services
from backend.settings import Settings
from runtime.settings import SessionSettings
from runtime.timing import TIMING, TimingBudget
from tests import imagegen
from tests.imagegen import png_header_claiming
from tests.upstream import SECRET_BODY, upstream_server

MODELS = ["resnet18", "mobilenet_v3_large"]


def _settings(bundles_dir, **overrides) -> Settings:
    base = {
        "bundles_dir": bundles_dir,
        "models": ",".join(MODELS),
        "session": SessionSettings(threads=2),
        "url_total_timeout_s": 2.0,
        "url_connect_timeout_s": 1.0,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="module")
def upstream():
    with upstream_server() as server:
        yield server


@pytest.fixture(scope="module")
def client(bundles_dir, upstream):
    """An app allowed to fetch from the local upstream (loopback, its port), as in dev."""
    app = create_app(
        _settings(
            bundles_dir,
            url_allow_loopback=True,
            url_allowed_ports=frozenset({80, 443, upstream.port}),
        )
    )
    return app.test_client()


@pytest.fixture(scope="module")
def strict_client(bundles_dir):
    """The production URL policy: no loopback, ports 80/443 only."""
    return create_app(_settings(bundles_dir, models="resnet18")).test_client()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(size=(320, 240)) -> Image.Image:
    """A deterministic, non-uniform picture."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((220, 40, 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def upload(client, data: bytes, filename="image.jpg", **fields):
    return client.post(
        "/predict",
        data={"image": (io.BytesIO(data), filename), **fields},
        content_type="multipart/form-data",
    )


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["message"] and isinstance(error["message"], str)
    assert "Traceback" not in error["message"]
    if code:
        assert error["code"] == code
    return error


# --- the contract ----------------------------------------------------------------------


def test_health_ready_hello(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json() == {"status": "ready", "models": MODELS}
    assert client.get("/hello").get_json() == "Hello!"


def test_models_lists_the_default_first(client, bundles_dir):
    assert client.get("/models").get_json() == MODELS
    app = create_app(_settings(bundles_dir, default_model="mobilenet_v3_large"))
    assert app.test_client().get("/models").get_json() == ["mobilenet_v3_large", "resnet18"]


def test_model_metadata(client, weights_origin):
    facts = client.get("/models/resnet18").get_json()
    assert facts["architecture"] == "resnet18"
    assert facts["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert facts["sha256"] == weights_origin.files["resnet18"][1]
    assert facts["file_size_bytes"] == weights_origin.files["resnet18"][0].stat().st_size
    assert facts["parameters"] == 11689512 and facts["imagenet_acc1"] == 69.758
    assert facts["input_size"] == 224 and facts["untrained"] is False
    compiled = facts["compiled"]
    assert compiled["format"] == "onnx" and len(compiled["graph_xxh3_128"]) == 32
    assert compiled["versions"]["onnxruntime"] and compiled["versions"]["torch"]
    assert 0 <= compiled["verification"]["worst_probability_difference"] <= 1e-4


def test_unknown_model_metadata_is_404_listing_ids(client):
    error = assert_error(client.get("/models/vgg16"), 404, "unknown_model")
    assert "resnet18" in error["message"] and "mobilenet_v3_large" in error["message"]


def test_predict_upload(client):
    response = upload(client, encode(photo(), "JPEG"), top_k="3")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model"] == "resnet18"  # the default
    assert len(body["predictions"]) == 3
    assert body["category"] == body["predictions"][0]["label"]
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities)
    assert {"decode", "preprocess", "forward", "total"} <= set(body["timings_ms"])
    assert "untrained" not in body


SERVED_IMAGES = [
    encode(photo((320, 240)), "JPEG", quality=90),
    encode(photo((199, 401)).convert("L"), "PNG"),
    encode(photo((640, 480)).convert("CMYK"), "JPEG"),
    encode(photo((1000, 90)).convert("RGBA"), "PNG"),
    encode(photo((57, 43)).convert("P"), "GIF"),
]


@pytest.mark.parametrize("model", MODELS)
def test_served_probabilities_equal_torchvisions(client, baked_dir, model):
    """The served pipeline (runtime preprocessing, ONNX Runtime) against torchvision's own
    transforms and eager model, on the image the backend decoded, to 1e-4."""
    import torch

    from backend.imaging import ImagePolicy, decode_image
    from weights.store import WeightsStore

    store = WeightsStore(baked_dir)
    module = store.load(model, allow_untrained=True)
    transforms = store.fetched(model).catalog_entry().transforms()
    for data in SERVED_IMAGES:
        body = upload(client, data, model=model, top_k="20").get_json()
        image = decode_image(data, ImagePolicy())
        with torch.inference_mode():
            logits = module(transforms(image).unsqueeze(0))[0]
        expected = torch.softmax(logits.double(), dim=0)
        served = {p["index"]: p["probability"] for p in body["predictions"]}
        assert max(abs(p - float(expected[i])) for i, p in served.items()) <= 1e-4
        # no class left out was more probable than the ones served
        left_out = [float(p) for i, p in enumerate(expected) if i not in served]
        assert max(left_out) <= min(served.values()) + 1e-4
        assert body["predictions"][0]["index"] == int(expected.argmax())


def test_predict_url_with_model_and_default_top_k(client, upstream):
    response = client.post(
        "/predict", json={"url": upstream.url("/image.jpg"), "model": "mobilenet_v3_large"}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model"] == "mobilenet_v3_large"
    assert len(body["predictions"]) == 5
    assert "fetch" in body["timings_ms"]


def test_the_model_in_the_path_is_used(client):
    data = encode(photo(), "PNG")
    by_path = client.post(
        "/model/mobilenet_v3_large/predict",
        data={"image": (io.BytesIO(data), "a.png")},
        content_type="multipart/form-data",
    ).get_json()
    by_field = upload(client, data, model="mobilenet_v3_large").get_json()
    default = upload(client, data).get_json()
    assert by_path["model"] == "mobilenet_v3_large"
    assert by_path["predictions"] == by_field["predictions"]
    assert by_path["predictions"] != default["predictions"]  # resnet18 answers differently
    assert_error(client.post("/model/vgg16/predict", json={"url": "http://x"}), 404)


def test_no_endpoint_changes_the_model_for_others(client):
    assert client.put("/model/mobilenet_v3_large").status_code in (404, 405)
    assert client.post("/model/mobilenet_v3_large").status_code in (404, 405)
    assert upload(client, encode(photo(), "PNG")).get_json()["model"] == "resnet18"


def test_request_and_trace_ids_are_logged(client, capsys):
    response = client.get(
        "/models", headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"}
    )
    assert response.headers["X-Request-Id"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [entry] = [e for e in lines if e.get("event") == "request"]
    assert entry["severity"] == "INFO"
    assert entry["request_id"] == response.headers["X-Request-Id"]
    assert entry["logging.googleapis.com/trace"].endswith("105445aa7843bc8bf206b12000100000")


@pytest.mark.parametrize(
    "header",
    [
        "105445aa7843bc8bf206b12000100000/" + "9" * 5000 + ";o=1",  # int() refuses > 4,300 digits
        "105445aa7843bc8bf206b12000100000/\u00b9\u00b2;o=1",  # superscript digits
        "105445aa7843bc8bf206b12000100000/99999999999999999999999;o=1",  # over 2**64
        "\u0661\u0662/1;o=1",  # Arabic-Indic digits: alphanumeric, not ASCII
        "a" * 5000,
        "/;o=1",
    ],
    ids=[
        "5000-digit span",
        "superscript span",
        "span over 2**64",
        "non-ASCII trace",
        "long",
        "empty",
    ],
)
def test_odd_trace_headers_are_ignored_never_a_500(client, capsys, header):
    response = client.get("/models", headers={"X-Cloud-Trace-Context": header})
    assert response.status_code == 200, response.get_data(as_text=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [entry] = [e for e in lines if e.get("event") == "request"]
    assert "logging.googleapis.com/spanId" not in entry


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400),
        ({"data": "null", "content_type": "application/json"}, 400),
        ({"data": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"}, 400),
        ({"data": "url=http://example.com/", "content_type": "text/plain"}, 415),
        ({"data": "url=x", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"json": {}}, 400),
        ({"json": {"url": 42}}, 400),
        ({"json": {"url": None}}, 400),
        ({"json": {"url": ["http://example.com/a.jpg"]}}, 400),
        ({"json": {"url": ""}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "top_k": 0}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "top_k": 21}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "top_k": "five"}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "top_k": 2.5}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "top_k": True}}, 400),
        ({"json": {"url": "http://example.com/a.jpg", "model": 7}}, 400),
    ],
    ids=lambda v: str(v)[:40],
)
def test_malformed_requests(client, kwargs, status):
    assert_error(client.post("/predict", **kwargs), status)


def test_both_url_and_image_is_400(client):
    response = client.post(
        "/predict",
        data={"image": (io.BytesIO(encode(photo(), "PNG")), "a.png"), "url": "http://x.org/a"},
        content_type="multipart/form-data",
    )
    assert_error(response, 400)


def test_unknown_model_is_404_listing_valid_ids(client):
    error = assert_error(
        client.post("/predict", json={"url": "http://example.com/a.jpg", "model": "vgg16"}),
        404,
        "unknown_model",
    )
    assert "resnet18" in error["message"]


def test_body_over_the_limit_is_413(bundles_dir):
    app = create_app(_settings(bundles_dir, models="resnet18", max_request_bytes=1024))
    response = upload(app.test_client(), b"\xff" * 4096)
    assert_error(response, 413, "payload_too_large")


def test_wrong_method_and_unknown_route_are_json(client):
    assert_error(client.get("/predict"), 405)
    assert_error(client.get("/no/such/route"), 404)


# --- URLs: refused before any connection ------------------------------------------------

FORBIDDEN_URLS = [
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://0251.0376.0251.0376/",
    "http://%31%32%37.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://10.0.0.1/a.jpg",
    "http://172.16.0.1/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://100.64.0.1/a.jpg",
    "file:///etc/passwd",
    "gopher://example.com/",
    "ftp://example.com/a.jpg",
    "data:image/png;base64,iVBORw0KGgo=",
    "//example.com/a.jpg",
    "http://example.com:8080/a.jpg",
    "http://169.254.169.254\\@example.com/",
    "http://user:pass@example.com/a.jpg",
    "http://example.com/" + "a" * 2100,
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS, ids=lambda u: u[:50])
def test_forbidden_urls_are_refused(strict_client, url):
    assert_error(strict_client.post("/predict", json={"url": url}), 400, "url_not_allowed")


def test_loopback_is_refused_by_default_even_on_an_allowed_port(strict_client, upstream):
    before = len(upstream.requests)
    response = strict_client.post("/predict", json={"url": upstream.url("/image.png")})
    assert_error(response, 400, "url_not_allowed")
    assert len(upstream.requests) == before  # no connection reached the server


# --- downloads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/too-large", 413),
        ("/endless", 413),
        ("/short", 502),
        ("/not-found", 502),
        ("/server-error", 502),
        ("/html", 415),
        ("/drip", 504),
        ("/hang", 504),
        ("/gzip", 502),
        ("/redirect/4", 400),
    ],
)
def test_download_faults(client, upstream, path, status):
    response = client.post("/predict", json={"url": upstream.url(path)})
    assert_error(response, status)
    assert SECRET_BODY.decode() not in response.get_data(as_text=True)


def test_redirects_are_followed_up_to_three(client, upstream):
    assert client.post("/predict", json={"url": upstream.url("/redirect/3")}).status_code == 200


def test_redirect_to_the_metadata_server_is_refused(client, upstream):
    target = "http://169.254.169.254/computeMetadata/v1/"
    response = client.post("/predict", json={"url": upstream.url(f"/redirect?to={target}")})
    assert_error(response, 400, "url_not_allowed")


def test_client_headers_are_not_forwarded(client, upstream):
    client.post(
        "/predict",
        json={"url": upstream.url("/image.png")},
        headers={"Metadata-Flavor": "Google", "Authorization": "Bearer secret"},
    )
    received = [r for r in upstream.requests if r.path == "/image.png"][-1]
    names = {k.lower() for k in received.headers}
    assert "metadata-flavor" not in names and "authorization" not in names


# --- images --------------------------------------------------------------------------------


def _with_transparency() -> bytes:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return encode(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _truncated_jpeg() -> bytes:
    data = encode(photo((640, 480)), "JPEG", quality=95)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"just some text, not an image", 415),
        (b"<!doctype html><html><body>hi</body></html>", 415),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF", 415),
        (encode(photo(), "TIFF"), 415),
        (_truncated_jpeg(), 422),
        (png_header_claiming(10_000, 10_000), 413),
        (png_header_claiming(40_000, 40_000), 413),
    ],
    ids=["empty", "text", "html", "svg", "pdf", "tiff", "truncated-jpeg", "bomb-10k", "bomb-40k"],
)
def test_bad_images(client, data, status):
    assert_error(upload(client, data), status)


@pytest.mark.parametrize(
    "data",
    [
        encode(photo().convert("RGBA"), "PNG"),
        encode(photo().convert("LA"), "PNG"),
        _with_transparency(),
        encode(photo().convert("1"), "PNG"),
        encode(photo().convert("CMYK"), "JPEG"),
        encode(Image.new("I;16", (64, 64), 40000), "PNG"),
        _animated_gif(),
        encode(photo(), "WEBP"),
        encode(photo(), "BMP"),
    ],
    ids=[
        "rgba",
        "la",
        "palette-transparency",
        "1-bit",
        "cmyk",
        "16-bit",
        "gif-anim",
        "webp",
        "bmp",
    ],
)
def test_unusual_but_valid_images_are_classified(client, data):
    assert upload(client, data).status_code == 200


def test_a_one_pixel_image_is_classified(client):
    response = upload(client, encode(Image.new("RGB", (1, 1), "white"), "PNG"))
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == 5


@pytest.mark.parametrize("size", [(1, 10_000), (10_000, 1)])
def test_a_one_pixel_strip_is_422_naming_its_shape(client, size):
    error = assert_error(
        upload(client, encode(Image.new("RGB", size, "white"), "PNG")), 422, "undecodable_image"
    )
    assert f"{size[0]}x{size[1]}" in error["message"] and "50 times" in error["message"]


def test_a_jpeg_with_too_many_scans_is_422(client):
    data = imagegen.progressive_jpeg_with_repeated_scan(4000, 2000)
    error = assert_error(upload(client, data), 422, "undecodable_image")
    assert "scans" in error["message"]


def test_an_image_too_costly_to_decode_is_422(client):
    data = imagegen.png_with_many_chunks(10 * 1024 * 1024 - 4096)
    error = assert_error(upload(client, data), 422, "undecodable_image")
    assert "CPU" in error["message"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2048))
def test_random_bytes_get_200_or_4xx(client, data):
    status = upload(client, data).status_code
    assert status == 200 or 400 <= status < 500


def test_still_serving_after_bad_inputs(bundles_dir):
    # Stands alone: its own app, the bad inputs sent here, then a good image.
    app = create_app(_settings(bundles_dir, models="resnet18"))
    fresh = app.test_client()
    bad = [
        (b"", 400),
        (_truncated_jpeg(), 422),
        (png_header_claiming(40_000, 40_000), 413),
        (imagegen.progressive_jpeg_with_repeated_scan(1000, 100), 422),
        (imagegen.gif_with_many_extensions(10 * 1024 * 1024 - 4096), 422),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, 415),
    ]
    for data, status in bad:
        assert_error(upload(fresh, data), status)
    assert fresh.get("/health").status_code == 200
    answer = upload(fresh, encode(photo(), "JPEG"))
    assert answer.status_code == 200
    assert answer.get_json()["model"] == "resnet18"


# --- review follow-ups: corners of the contract ------------------------------------------


@pytest.mark.parametrize("top_k", ["²", "①", "1" * 5000, "-1", " 3x"])
def test_multipart_top_k_that_is_not_a_small_integer_is_400(client, top_k):
    assert_error(upload(client, encode(photo(), "PNG"), top_k=top_k), 400)


def test_multipart_top_k_digits_are_accepted(client):
    assert len(upload(client, encode(photo(), "PNG"), top_k=" 7 ").get_json()["predictions"]) == 7


def test_image_sent_as_a_text_field_is_400(client):
    response = client.post(
        "/predict", data={"image": "not a file"}, content_type="multipart/form-data"
    )
    assert_error(response, 400)


def test_an_empty_url_field_beside_an_upload_is_ignored(client):
    # What an HTML form sends when the user fills in only the file.
    assert upload(client, encode(photo(), "PNG"), url="", model="").status_code == 200


def test_an_unknown_model_in_the_path_is_404_whatever_the_body(client):
    response = client.post(
        "/model/vgg16/predict", data="{not json", content_type="application/json"
    )
    assert_error(response, 404, "unknown_model")


def test_options_answers_json(client):
    assert_error(client.options("/predict"), 405)


def test_413_says_which_limit(bundles_dir):
    app = create_app(_settings(bundles_dir, models="resnet18"))
    response = app.test_client().post(
        "/predict",
        data={"url": "x" * (600 * 1024)},  # a form field over werkzeug's form memory limit
        content_type="multipart/form-data",
    )
    error = assert_error(response, 413)
    assert "byte limit" not in error["message"]  # the body is 600 KB: not the request limit


def test_upload_over_the_image_cap_is_413(bundles_dir):
    app = create_app(
        _settings(
            bundles_dir,
            models="resnet18",
            max_request_bytes=8 * 1024 * 1024,
            max_image_bytes=1024 * 1024,
        )
    )
    assert_error(upload(app.test_client(), b"\xff" * (2 * 1024 * 1024)), 413, "payload_too_large")


def test_a_long_unknown_model_id_is_not_echoed_whole(client):
    response = client.post("/predict", json={"url": "http://example.com/a", "model": "m" * 100_000})
    assert len(response.get_data()) < 2000
    assert_error(response, 404)


def test_listed_models_behind_the_gateway(bundles_dir):
    """v3: one service per model; GET /models lists the whole set."""
    app = create_app(_settings(bundles_dir, models="mobilenet_v3_large", listed_models="small"))
    client = app.test_client()
    assert client.get("/models").get_json() == ["resnet18", "mobilenet_v3_large"]
    error = assert_error(
        client.post("/predict", json={"url": "http://example.com/a", "model": "resnet18"}), 404
    )
    assert "its own service" in error["message"]


def _held_load(bundles_dir, monkeypatch, then=None, **settings):
    """An app loading in the background whose second model opens only once `release` is set
    (`then()` runs first, if given: raising there makes the load fail)."""
    release = threading.Event()
    real_open = ModelRegistry._open

    def held_open(self, model_id, **kwargs):
        if model_id == "mobilenet_v3_large":
            assert release.wait(30)
            if then is not None:
                then()
        return real_open(self, model_id, **kwargs)

    monkeypatch.setattr(ModelRegistry, "_open", held_open)
    app = create_app(_settings(bundles_dir, background_load=True, **settings))
    return app, release


def _timed_get(client, path: str):
    began = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - began


def test_ready_is_503_until_every_model_is_loaded(bundles_dir, monkeypatch):
    app, release = _held_load(bundles_dir, monkeypatch)
    client = app.test_client()
    models = services(app).models
    try:
        assert client.get("/health").status_code == 200
        response, took = _timed_get(client, "/ready")
        error = assert_error(response, 503, "not_ready")
        assert "of 2 ready" in error["message"]
        # Held for the load (TIMING holds it under the probe's timeout: tests/test_timing.py)
        assert TIMING.ready_hold_s - 0.01 <= took < TIMING.ready_hold_s + 2, took
        began = time.monotonic()
        assert_error(upload(client, encode(photo(), "PNG")), 503, "not_ready")
        took = time.monotonic() - began  # held as /ready is
        assert TIMING.ready_hold_s - 0.01 <= took < TIMING.ready_hold_s + 2, took
    finally:
        release.set()
    assert models.wait_ready(60)
    assert client.get("/ready").status_code == 200


@pytest.fixture
def long_hold(monkeypatch):
    """/ready holds up to 30 s: what ends a hold is then the load, never the hold's end."""
    budget = TimingBudget(probe_s=30)
    monkeypatch.setattr("backend.routes.TIMING", budget)
    return budget.ready_hold_s


def _ready_in_background(app, send=lambda client: client.get("/ready")) -> dict:
    """`send` (GET /ready) on a thread of its own; returned once the request waits for the
    models."""
    models, answer, held = services(app).models, {}, threading.Event()
    real_wait = models.wait_ready

    def noting_wait(timeout=None):
        held.set()
        return real_wait(timeout)

    models.wait_ready = noting_wait

    def request() -> None:
        began = time.monotonic()
        answer["response"] = send(app.test_client())
        answer["took"] = time.monotonic() - began

    answer["thread"] = threading.Thread(target=request)
    answer["thread"].start()
    assert held.wait(30)
    time.sleep(0.05)  # into the wait itself
    return answer


@pytest.mark.parametrize(
    "send",
    [
        lambda client: client.get("/ready"),
        lambda client: upload(client, encode(photo(), "PNG")),
        lambda client: upload(client, encode(photo(), "PNG"), model="mobilenet_v3_large"),
        lambda client: client.post(
            "/model/resnet18/predict",
            data={"image": (io.BytesIO(encode(photo(), "PNG")), "a.png")},
            content_type="multipart/form-data",
        ),
    ],
    ids=["ready", "predict", "predict-a-model", "predict-by-path"],
)
def test_a_request_held_during_the_load_answers_the_moment_it_ends(
    bundles_dir, monkeypatch, long_hold, send
):
    app, release = _held_load(bundles_dir, monkeypatch)
    answer = _ready_in_background(app, send)
    time.sleep(0.2)
    assert answer["thread"].is_alive()  # held, not answered 503 at once
    release.set()
    answer["thread"].join(60)
    assert answer["response"].status_code == 200, answer["response"].json
    assert answer["took"] < long_hold / 2, answer["took"]
    if answer["response"].request.path != "/ready":  # a prediction says how long it waited
        assert answer["response"].json["timings_ms"]["ready_wait"] >= 200


def test_predictions_beyond_half_the_request_threads_are_not_held(
    bundles_dir, monkeypatch, long_hold
):
    """Half the request threads at most wait for the load (the rest stay for /ready and
    /health): beyond that, a prediction is told 503 at once."""
    app, release = _held_load(bundles_dir, monkeypatch, request_threads=2)
    try:
        held = _ready_in_background(app, lambda client: upload(client, encode(photo(), "PNG")))
        began = time.monotonic()
        assert_error(upload(app.test_client(), encode(photo(), "PNG")), 503, "not_ready")
        assert time.monotonic() - began < long_hold / 2
        assert held["thread"].is_alive()  # the first still waits
    finally:
        release.set()
    held["thread"].join(60)
    assert held["response"].status_code == 200


def test_with_one_request_thread_no_prediction_is_held(bundles_dir, monkeypatch, long_hold):
    """The one thread stays for /ready and /health: a prediction is told 503 at once."""
    app, release = _held_load(bundles_dir, monkeypatch, request_threads=1)
    try:
        began = time.monotonic()
        assert_error(upload(app.test_client(), encode(photo(), "PNG")), 503, "not_ready")
        assert time.monotonic() - began < long_hold / 2
    finally:
        release.set()


def test_a_hold_that_ends_unanswered_gives_its_place_back(bundles_dir, monkeypatch):
    """With one place (two request threads), a prediction held to the end of its wait frees
    it: the next one is held too, not told 503 at once."""
    app, release = _held_load(bundles_dir, monkeypatch, request_threads=2)
    models = services(app).models
    try:
        for _ in range(2):
            began = time.monotonic()
            with pytest.raises(NotReady):
                models.get(None, wait=0.3)
            assert time.monotonic() - began >= 0.3
    finally:
        release.set()


def test_a_model_not_served_is_told_at_once_during_the_load(bundles_dir, monkeypatch, long_hold):
    app, release = _held_load(bundles_dir, monkeypatch)
    try:
        began = time.monotonic()
        assert_error(upload(app.test_client(), encode(photo(), "PNG"), model="nope"), 404)
        assert time.monotonic() - began < long_hold / 2
    finally:
        release.set()


def test_a_ready_request_held_when_the_load_fails_is_told_at_once(
    bundles_dir, monkeypatch, long_hold
):
    def fail() -> None:
        raise KeyError("a bug nobody planned for")

    app, release = _held_load(bundles_dir, monkeypatch, then=fail)
    answer = _ready_in_background(app)
    release.set()
    answer["thread"].join(60)
    error = assert_error(answer["response"], 503, "not_ready")
    assert "loading failed" in error["message"] and "nobody planned" in error["message"]
    assert answer["took"] < long_hold / 2, answer["took"]


@pytest.mark.parametrize(
    "send",
    [lambda client: client.get("/ready"), lambda client: upload(client, encode(photo(), "PNG"))],
    ids=["ready", "predict"],
)
def test_a_request_held_when_the_instance_stops_is_answered_at_once(
    bundles_dir, monkeypatch, long_hold, send
):
    app, release = _held_load(bundles_dir, monkeypatch)
    try:
        answer = _ready_in_background(app, send)
        services(app).models.stop()  # SIGTERM: the server's stop tells the registry
        answer["thread"].join(60)
        error = assert_error(answer["response"], 503, "not_ready")
        assert "stopping" in error["message"], error
        assert answer["took"] < long_hold / 2, answer["took"]
    finally:
        release.set()


def test_a_failed_background_load_is_reported_not_hidden(bundles_dir, monkeypatch):
    def broken(self, model_id, **kwargs):
        raise KeyError("a bug nobody planned for")

    monkeypatch.setattr(ModelRegistry, "_open", broken)
    app = create_app(_settings(bundles_dir, background_load=True))
    models = services(app).models
    for _ in range(100):
        if models.failure:
            break
        time.sleep(0.05)
    error = assert_error(app.test_client().get("/ready"), 503)
    assert "loading failed" in error["message"] and "nobody planned" in error["message"]


def test_the_allocator_is_set_for_serving_once_every_session_is_open(bundles_dir, monkeypatch):
    """The openings run with the loading threshold, the answers with the serving one
    (backend/process.py): the switch comes after the last opening."""
    # Loads of earlier tests may still run in the background: only this load's calls count
    # (a synchronous load runs on this thread; its openings are told by their registry).
    seen, here = [], threading.current_thread()
    real_open = ModelRegistry._open

    def noting_open(self, model_id, **kwargs):
        session = real_open(self, model_id, **kwargs)
        seen.append(("opened", model_id, self))
        return session

    def noting(setting: str):
        def note() -> None:
            if threading.current_thread() is here:
                seen.append((setting, None, None))

        return note

    monkeypatch.setattr(ModelRegistry, "_open", noting_open)
    for setting in ("allocator_for_loading", "allocator_for_serving"):
        monkeypatch.setattr(f"backend.registry.{setting}", noting(setting))
    models = services(create_app(_settings(bundles_dir))).models
    seen = [(kind, model) for kind, model, registry in seen if registry in (None, models)]
    # The openings (two at a time: in either order) between the two settings
    assert seen[0] == ("allocator_for_loading", None)
    assert sorted(seen[1:-1]) == sorted(("opened", m) for m in MODELS)
    assert seen[-1] == ("allocator_for_serving", None)
