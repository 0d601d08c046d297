"""The frontend's settings, input checks, ID token cache and start command."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys

import pytest
import requests

from frontend.__main__ import streamlit_command
from frontend.auth import CachedIdTokens
from frontend.config import ConfigError, FrontendConfig
from frontend.inputs import MAX_UPLOAD_BYTES, InvalidInput, check_image_url, check_upload
from tests.backend_process import ROOT
from tests.frontend_process import start_frontend

# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "mode", "base_url"),
    [
        ({"SERVING_URL": "https://backend-v1.run.app/"}, "auto", "https://backend-v1.run.app"),
        ({"SERVING_URL": "http://b:8080", "FRONTEND_MODE": "V2"}, "v2", "http://b:8080"),
        ({"API_GATEWAY": "https://gw.example.com"}, "v3", "https://gw.example.com"),
        (
            {"API_GATEWAY": "https://gw", "SERVING_URL": "https://b", "FRONTEND_MODE": "v3"},
            "v3",
            "https://gw",
        ),
        ({"API_GATEWAY": "https://gw", "SERVING_URL": "https://b"}, "auto", "https://b"),
    ],
)
def test_mode_and_url_come_from_the_environment(env, mode, base_url):
    config = FrontendConfig.from_env(env)
    assert (config.mode, config.base_url) == (mode, base_url)
    assert config.path_routing is (mode == "v3")
    assert config.auth == "none"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SERVING_URL is not set"),
        ({"FRONTEND_MODE": "v1"}, "SERVING_URL is not set"),
        ({"FRONTEND_MODE": "v3", "SERVING_URL": "https://b"}, "API_GATEWAY is not set"),
        ({"SERVING_URL": "backend:8080"}, "SERVING_URL='backend:8080' is not an http(s) URL"),
        ({"SERVING_URL": "https://b", "FRONTEND_MODE": "v9"}, "FRONTEND_MODE='v9'"),
        ({"SERVING_URL": "https://b", "BACKEND_AUTH": "oauth"}, "BACKEND_AUTH='oauth'"),
        ({"SERVING_URL": "https://b", "BACKEND_TIMEOUT_S": "soon"}, "BACKEND_TIMEOUT_S='soon'"),
        ({"SERVING_URL": "https://b", "BACKEND_TIMEOUT_S": "0"}, "must be positive"),
    ],
)
def test_wrong_settings_name_the_variable(env, named):
    with pytest.raises(ConfigError) as caught:
        FrontendConfig.from_env(env)
    assert named in str(caught.value)


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


# --- ID token cache ---------------------------------------------------------------------------


def jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=")
    return f"header.{payload.decode()}.signature"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_reused_until_shortly_before_it_expires():
    clock, fetched = Clock(), []

    def fetch(audience: str) -> str:
        fetched.append(audience)
        return jwt(clock.now + 3600)

    tokens = CachedIdTokens(fetch, clock)
    first = tokens("https://b")
    clock.now += 3000  # 10 minutes left: still good
    assert tokens("https://b") == first
    assert fetched == ["https://b"]
    tokens("https://other")  # each audience has its own token
    assert fetched == ["https://b", "https://other"]
    clock.now += 400  # under 5 minutes left: refreshed
    assert tokens("https://b") != first
    assert fetched == ["https://b", "https://other", "https://b"]


def test_a_token_without_a_readable_expiry_is_reused_briefly():
    clock, fetched = Clock(), []
    tokens = CachedIdTokens(lambda audience: fetched.append(audience) or "opaque", clock)
    tokens("https://b")
    clock.now += 200
    tokens("https://b")
    clock.now += 200
    tokens("https://b")
    assert len(fetched) == 2


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
    forbidden = {"torch", "torchvision", "backend", "weights", "PIL", "flask"}
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
