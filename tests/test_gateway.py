"""v3: the gateway spec for Google API Gateway, and the local stack behind nginx."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from tests.backend_process import port_served
from tests.upstream import PNG_BYTES
from weights.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deployment"))

import gateway  # noqa: E402
import local_v3  # noqa: E402

V2 = load_catalog().select("v2")
URLS = {m: f"https://{m.replace('_', '-')}-abc123-nn.a.run.app" for m in V2}


def test_spec_is_valid_swagger_2_and_routes_every_model():
    spec = gateway.openapi_spec(URLS, "resnet152")
    validate(spec)  # raises on an invalid document
    assert spec["swagger"] == "2.0"
    for model_id, url in URLS.items():
        for path, method in [
            (f"/model/{model_id}/predict", "post"),
            (f"/models/{model_id}", "get"),
        ]:
            backend = spec["paths"][path][method]["x-google-backend"]
            assert backend == {
                "address": url,
                "path_translation": "APPEND_PATH_TO_ADDRESS",
                "deadline": gateway.DEADLINE_S,
            }
    assert spec["paths"]["/models"]["get"]["x-google-backend"]["address"] == URLS["resnet152"]
    operation_ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids)) == 1 + 2 * len(V2)


def test_validator_would_catch_a_broken_spec():
    spec = gateway.openapi_spec(URLS, "resnet152")
    del spec["paths"]["/models"]["get"]["responses"]
    with pytest.raises(OpenAPIValidationError):
        validate(spec)


@pytest.mark.parametrize(
    ("routes", "default", "complaint"),
    [
        ({}, "x", "no routes"),
        ({"resnet18": "ftp://x"}, "resnet18", "bare http"),
        ({"resnet18": "https://x.run.app/some/path"}, "resnet18", "bare http"),
        ({"Bad Id": "https://x.run.app"}, "Bad Id", "lowercase"),
        ({"resnet18": "https://x.run.app"}, "vgg16", "no route"),
    ],
)
def test_bad_routes_are_refused(routes, default, complaint):
    with pytest.raises(ValueError, match=complaint):
        gateway.openapi_spec(routes, default)


@pytest.mark.slow
def test_local_v3_routes_each_model_to_its_own_service(bundles_dir, tmp_path):
    with local_v3.run_local_v3(
        bundles_dir=bundles_dir, models="resnet18,mobilenet_v3_large", work_dir=tmp_path
    ) as stack:
        gw = stack.gateway_url
        assert requests.get(f"{gw}/models", timeout=10).json() == [
            "resnet18",
            "mobilenet_v3_large",
        ]
        for model_id in ["resnet18", "mobilenet_v3_large"]:
            response = requests.post(
                f"{gw}/model/{model_id}/predict",
                files={"image": ("x.png", PNG_BYTES, "image/png")},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert response.json()["model"] == model_id
            # each backend serves only its own model
            own = requests.get(f"{stack.backends[model_id]}/ready", timeout=5).json()
            assert own["models"] == [model_id]
            assert requests.get(f"{gw}/models/{model_id}", timeout=10).json()["id"] == model_id

        unknown = requests.post(
            f"{gw}/model/vgg16/predict", files={"image": ("x.png", PNG_BYTES)}, timeout=10
        )
        assert unknown.status_code == 404
        assert unknown.headers["Content-Type"].startswith("application/json")
        assert unknown.json()["error"]["code"] == "not_found"

        too_big = requests.post(
            f"{gw}/model/resnet18/predict",
            files={"image": ("x.png", b"\0" * (11 * 1024 * 1024))},
            timeout=30,
        )
        assert too_big.status_code == 413  # refused by nginx itself, in the same JSON shape
        assert too_big.json()["error"]["code"] == "payload_too_large"

        backend_error = requests.post(f"{gw}/model/resnet18/predict", json={"url": ""}, timeout=10)
        assert backend_error.status_code == 400  # the backend's own JSON error, passed through
        assert backend_error.json()["error"]["code"] == "bad_request"


@pytest.mark.slow
def test_local_v3_leaves_no_process_behind_even_when_killed(bundles_dir, tmp_path):
    """SIGKILL can't be handled: the children must go by themselves (PR_SET_PDEATHSIG)."""
    import os
    import re
    import signal
    import time

    port = local_v3.free_port()
    launcher = subprocess.Popen(
        [sys.executable, "deployment/local_v3.py", "--bundles-dir", str(bundles_dir),
         "--models", "resnet18", "--port", str(port), "--frontend-port", "0",
         "--work-dir", str(tmp_path)],
        cwd=ROOT, env=dict(os.environ),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = ""
    for line in launcher.stdout:
        output += line
        if "Ctrl-C stops everything" in line:
            break
    backend_port = int(re.search(r"resnet18\s+http://127.0.0.1:(\d+)", output).group(1))
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(10)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (port_served(port) or port_served(backend_port)):
        time.sleep(0.2)
    assert not port_served(port), "nginx outlived its launcher"
    assert not port_served(backend_port), "the backend outlived its launcher"


@pytest.mark.slow
def test_a_backend_never_gets_a_port_the_stack_was_told_to_use(bundles_dir, tmp_path, monkeypatch):
    """The gateway's and the page's ports stay free until nginx and Streamlit bind them, after
    the backends start: the kernel may hand one out again, and a backend on it took the page's
    port once (the page could not start). Here the kernel offers the gateway's port first."""
    gateway_port = local_v3.free_port()
    offers = [gateway_port]

    class Offered:
        """A bind to port 0 that the kernel answered with `port`."""

        def __init__(self, port: int) -> None:
            self.port = port

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    real_socket = socket.socket
    monkeypatch.setattr(  # local_v3's own name only: the processes and urlopen are untouched
        local_v3,
        "socket",
        SimpleNamespace(socket=lambda: Offered(offers.pop()) if offers else real_socket()),
    )
    with local_v3.run_local_v3(
        bundles_dir=bundles_dir, models="resnet18", work_dir=tmp_path, port=gateway_port
    ) as stack:
        assert not offers  # the gateway's port was offered, and refused
        assert stack.backends["resnet18"] != f"http://127.0.0.1:{gateway_port}"
        assert requests.get(f"{stack.gateway_url}/models", timeout=10).json() == ["resnet18"]
