"""The image-size limit: defined once (runtime/limits.py), the same for curl, the page, the gateway.

An upload of the limit minus a few bytes (or of exactly the limit) is classified, from a
curl-like multipart body and from the page's own client; one byte over is a 413 that names the
image limit; a request body past the room left for multipart framing is a 413 that says so.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from backend.app import create_app
from backend.settings import Settings, SettingsError
from backend.urlfetch import FetchPolicy
from frontend.__main__ import streamlit_command
from frontend.client import BackendClient
from frontend.inputs import MAX_UPLOAD_BYTES, InvalidInput, check_upload
from runtime.limits import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_MB,
    MAX_REQUEST_BYTES,
    MULTIPART_ALLOWANCE_BYTES,
    max_request_bytes,
)
from runtime.settings import SessionSettings

ROOT = Path(__file__).resolve().parents[1]
LIMITS = ROOT / "runtime" / "limits.py"


def padded_jpeg(size: int) -> bytes:
    """A valid JPEG of exactly `size` bytes: a photo, then padding after its end marker."""
    buffer = io.BytesIO()
    image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    image.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data + b"\0" * (size - len(data))


def curl_multipart(data: bytes, filename: str = "photo.jpg") -> tuple[bytes, str]:
    """The body and Content-Type `curl -F image=@photo.jpg` sends."""
    boundary = "------------------------" + "d74496d66958873e"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def client(bundles_dir):
    settings = Settings(
        bundles_dir=bundles_dir, models="resnet18", session=SessionSettings(threads=2)
    )
    return create_app(settings).test_client()


# --- one definition -----------------------------------------------------------------------


def test_the_limit_module_is_standard_library_only():
    tree = ast.parse(LIMITS.read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__"}


def test_every_part_uses_the_one_definition():
    defaults = Settings()
    assert defaults.max_image_bytes == MAX_IMAGE_BYTES == MAX_IMAGE_MB * 1024 * 1024
    assert defaults.max_request_bytes == MAX_REQUEST_BYTES
    assert MAX_REQUEST_BYTES == MAX_IMAGE_BYTES + MULTIPART_ALLOWANCE_BYTES
    assert FetchPolicy().max_bytes == MAX_IMAGE_BYTES
    assert MAX_UPLOAD_BYTES == MAX_IMAGE_BYTES
    assert f"--server.maxUploadSize={MAX_IMAGE_MB}" in streamlit_command("8080", "127.0.0.1")
    import sys

    sys.path.insert(0, str(ROOT / "deployment"))
    try:
        import gateway
    finally:
        sys.path.remove(str(ROOT / "deployment"))
    config = gateway.nginx_config(
        {"resnet18": "http://127.0.0.1:9001"}, "resnet18", listen=8080, prefix="/tmp/x"
    )
    assert f"client_max_body_size {MAX_REQUEST_BYTES};" in config


def test_no_other_file_spells_the_limit_out():
    spelled = re.compile(r"\b10 \* 1024 \* 1024\b|\b10_?485_?760\b|maxUploadSize=10\b")
    sources = [
        path
        for part in ("backend", "frontend", "runtime", "deployment", "weights", "bake")
        for path in (ROOT / part).rglob("*.py")
    ]
    offenders = [str(p.relative_to(ROOT)) for p in sources if spelled.search(p.read_text())]
    assert offenders == []


# --- the backend's settings ---------------------------------------------------------------


def test_a_lower_image_limit_moves_the_request_limit_with_it():
    settings = Settings.from_env({"MAX_IMAGE_MB": "2"})
    assert settings.max_image_bytes == 2 * 1024 * 1024
    assert settings.max_request_bytes == max_request_bytes(2 * 1024 * 1024)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_IMAGE_MB": str(MAX_IMAGE_MB + 1)}, "runtime/limits.py"),
    ],
)
def test_settings_that_would_split_the_limit_are_refused(env, named):
    with pytest.raises(SettingsError, match=re.escape(named)):
        Settings.from_env(env)


# --- uploads at the limit -------------------------------------------------------------------


@pytest.mark.parametrize("size", [MAX_IMAGE_BYTES - 64, MAX_IMAGE_BYTES])
def test_an_upload_up_to_the_limit_from_curl_is_classified(client, size):
    body, content_type = curl_multipart(padded_jpeg(size))
    assert len(body) > MAX_IMAGE_BYTES  # the framing alone would have made it a 413
    response = client.post("/predict", data=body, content_type=content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["model"] == "resnet18"


def test_one_byte_over_the_limit_is_a_413_naming_the_image_limit(client):
    body, content_type = curl_multipart(padded_jpeg(MAX_IMAGE_BYTES + 1))
    response = client.post("/predict", data=body, content_type=content_type)
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["message"].startswith(f"the image is over the {MAX_IMAGE_MB} MB limit")


def test_a_body_past_the_framing_room_is_a_413_naming_the_request_limit(client):
    body, content_type = curl_multipart(padded_jpeg(MAX_REQUEST_BYTES))
    response = client.post("/predict", data=body, content_type=content_type)
    assert response.status_code == 413
    message = response.get_json()["error"]["message"]
    assert f"{MAX_REQUEST_BYTES:,}-byte limit" in message and f"{MAX_IMAGE_MB} MB" in message


def test_the_page_accepts_what_the_backend_accepts():
    assert check_upload(padded_jpeg(MAX_IMAGE_BYTES - 64))
    assert check_upload(padded_jpeg(MAX_IMAGE_BYTES))
    with pytest.raises(InvalidInput, match=f"at most {MAX_IMAGE_MB} MB"):
        check_upload(padded_jpeg(MAX_IMAGE_BYTES + 1))


@pytest.mark.slow
def test_an_upload_of_the_limit_minus_64_bytes_from_the_page_is_classified(backend_server):
    data = check_upload(padded_jpeg(MAX_IMAGE_BYTES - 64))
    client = BackendClient(backend_server.url, timeout_s=30)
    prediction = client.predict_image(
        data, model="resnet18", filename="photo.jpg", content_type="image/jpeg"
    )
    assert prediction.model == "resnet18" and len(prediction.labels) == 5
