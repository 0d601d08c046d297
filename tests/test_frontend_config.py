"""The frontend's settings, input checks, example photos and start command."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
import requests
from PIL import Image

from frontend.__main__ import streamlit_command
from frontend.config import ConfigError, FrontendConfig, RetiredSetting
from frontend.examples import DIRECTORY, EXAMPLES
from frontend.inputs import MAX_UPLOAD_BYTES, InvalidInput, check_image_url, check_upload
from tests.backend_process import ROOT
from tests.frontend_process import start_frontend

# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "picker", "base_url"),
    [
        ({"SERVING_URL": "https://backend-v1.run.app/"}, "auto", "https://backend-v1.run.app"),
        ({"SERVING_URL": "http://b:8080", "MODEL_PICKER": "On"}, "on", "http://b:8080"),
        ({"SERVING_URL": "http://b:8080", "MODEL_PICKER": "off"}, "off", "http://b:8080"),
        # A v3 gateway is a SERVING_URL like any backend: it routes /model/<id>/predict.
        ({"SERVING_URL": "https://gw.example.com"}, "auto", "https://gw.example.com"),
    ],
)
def test_picker_and_url_come_from_the_environment(env, picker, base_url):
    config = FrontendConfig.from_env(env)
    assert (config.picker, config.base_url) == (picker, base_url)
    assert config.auth == "none"


@pytest.mark.parametrize(
    ("picker", "models", "shown"),
    [
        ("auto", ["resnet152"], False),
        ("auto", ["resnet152", "vgg16"], True),
        ("on", ["resnet152"], True),
        ("off", ["resnet152", "vgg16"], False),
    ],
)
def test_the_picker_follows_the_setting_and_the_model_list(picker, models, shown):
    assert FrontendConfig("https://b", picker=picker).shows_picker(models) is shown


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SERVING_URL is not set"),
        ({"SERVING_URL": "backend:8080"}, "SERVING_URL='backend:8080' is not an http(s) URL"),
        ({"SERVING_URL": "https://b", "MODEL_PICKER": "yes"}, "MODEL_PICKER='yes'"),
        ({"SERVING_URL": "https://b", "BACKEND_AUTH": "oauth"}, "BACKEND_AUTH='oauth'"),
        ({"SERVING_URL": "https://b", "BACKEND_TIMEOUT_S": "soon"}, "BACKEND_TIMEOUT_S='soon'"),
        ({"SERVING_URL": "https://b", "BACKEND_TIMEOUT_S": "0"}, "must be positive"),
    ],
)
def test_wrong_settings_name_the_variable(env, named):
    with pytest.raises(ConfigError) as caught:
        FrontendConfig.from_env(env)
    assert named in str(caught.value)


RETIRED_NAMES = [
    ({"SERVING_URL": "https://b", "FRONTEND_MODE": "v2"}, "FRONTEND_MODE", "MODEL_PICKER"),
    ({"SERVING_URL": "https://b", "FRONTEND_MODE": ""}, "FRONTEND_MODE", "MODEL_PICKER"),
    ({"API_GATEWAY": "https://gw"}, "API_GATEWAY", "SERVING_URL"),
    ({"API_GATEWAY": "https://gw", "SERVING_URL": "https://gw"}, "API_GATEWAY", "SERVING_URL"),
]


@pytest.mark.parametrize(("env", "old", "new"), RETIRED_NAMES)
def test_a_retired_name_is_refused_naming_its_replacement(env, old, new):
    # Not ignored: a deployment still setting it would silently serve something else.
    with pytest.raises(RetiredSetting) as caught:
        FrontendConfig.from_env(env)
    assert f"{old} is retired: set {new}" in str(caught.value)


def test_auth_timeouts_and_audience_are_read():
    config = FrontendConfig.from_env(
        {
            "SERVING_URL": "https://b",
            "BACKEND_AUTH": "id_token",
            "BACKEND_AUDIENCE": "https://aud",
            "BACKEND_TIMEOUT_S": "12.5",
        }
    )
    assert (config.auth, config.audience, config.timeout_s) == ("id_token", "https://aud", 12.5)


# --- input checks ---------------------------------------------------------------------------


def test_a_good_url_is_kept_trimmed():
    assert check_image_url("  https://example.com/cat.jpg?s=1 \n") == (
        "https://example.com/cat.jpg?s=1"
    )
    assert check_image_url("HTTP://Example.com/a.png") == "HTTP://Example.com/a.png"


@pytest.mark.parametrize(
    "url",
    [None, "", "file:///etc/passwd", "data:image/png;base64,AAAA", "http://", "http://[::1/a"],
)
def test_urls_that_cannot_be_sent_are_refused(url):
    with pytest.raises(InvalidInput):
        check_image_url(url)


def test_uploads_must_have_bytes_and_fit_the_backends_limit():
    assert check_upload(b"abc") == b"abc"
    with pytest.raises(InvalidInput, match="empty"):
        check_upload(b"")
    with pytest.raises(InvalidInput, match="at most 10 MB"):
        check_upload(b"x" * (MAX_UPLOAD_BYTES + 1))


# --- example photos -------------------------------------------------------------------------


def test_every_example_is_a_small_photo_with_its_licence_stated():
    licences = (DIRECTORY / "LICENSES.md").read_text()
    shipped = sorted(p.name for p in DIRECTORY.glob("*.jpg"))
    assert shipped == sorted(f"{e.key}.jpg" for e in EXAMPLES)  # none unlisted, none missing
    for example in EXAMPLES:
        row = next(line for line in licences.splitlines() if f"`{example.key}.jpg`" in line)
        assert re.search(r"CC0|public domain", row), row
        assert example.path.stat().st_size < 200_000  # small enough to keep in git
        with Image.open(example.path) as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            assert min(image.size) >= 224  # what the models look at


# --- python -m frontend -------------------------------------------------------------------


def test_the_start_command_is_headless_without_usage_stats():
    command = streamlit_command("9000", "0.0.0.0")
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4].endswith("frontend/app.py")
    for option in (
        "--server.port=9000",
        "--server.address=0.0.0.0",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ):
        assert option in command


def test_a_bad_port_stops_the_start_with_its_name():
    result = subprocess.run(
        [sys.executable, "-m", "frontend"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PORT": "http"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PORT='http' is not a TCP port" in result.stderr


def test_a_retired_name_stops_the_start_naming_its_replacement():
    result = subprocess.run(
        [sys.executable, "-m", "frontend"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SERVING_URL": "http://b:8080", "FRONTEND_MODE": "v1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "FRONTEND_MODE is retired: set MODEL_PICKER" in result.stderr
    assert "serving the page" not in result.stderr  # it never started


@pytest.mark.slow
def test_python_m_frontend_serves_the_page_on_port(tmp_path):
    frontend = start_frontend(tmp_path / "frontend.log")  # no SERVING_URL
    try:
        frontend.wait_healthy()
        page = requests.get(frontend.url, timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        frontend.stop()
    assert "SERVING_URL is not set" in frontend.log()  # said at start, and on the page


def test_the_frontend_imports_nothing_of_the_backend_or_torch():
    # The frontend image has no torch and no backend code: an import of either would fail there.
    # (Pillow is there, a dependency of Streamlit and of the page's previews: frontend/preview.py.)
    forbidden = {"torch", "torchvision", "backend", "weights", "flask", "onnxruntime"}
    for path in sorted((ROOT / "frontend").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
