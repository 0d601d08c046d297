"""Shared fixtures: generated weights served from 127.0.0.1, and a baked directory.

huggingface_hub reads HF_HUB_OFFLINE once, when first imported. The weights store and the
backend set it (the serving process must never reach out), so importing the library
here, first, keeps the Hub fetch tests independent of the order tests run in.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants  # noqa: F401  # read before any test sets HF_HUB_OFFLINE (see below)
import pytest

from tests.backend_process import BackendProcess, start_backend
from tests.origin import OriginServer, WeightsOrigin, make_origin
from weights.fetch import fetch


@pytest.fixture(scope="session")
def weights_origin(tmp_path_factory) -> WeightsOrigin:
    """resnet18, mobilenet_v3_large (torchvision-style) and a Hub resnet18, served locally."""
    with OriginServer() as server:
        yield make_origin(tmp_path_factory.mktemp("origin"), server)


@pytest.fixture(scope="session")
def baked_dir(weights_origin: WeightsOrigin, tmp_path_factory) -> Path:
    """A weights directory baked by the real fetch code: resnet18 and mobilenet_v3_large."""
    dest = tmp_path_factory.mktemp("baked")
    fetch(["resnet18", "mobilenet_v3_large"], dest, catalog=weights_origin.catalog, progress=False)
    return dest


@pytest.fixture(scope="session")
def backend_server(baked_dir: Path, weights_origin: WeightsOrigin, tmp_path_factory):
    """A real gunicorn backend serving resnet18 and mobilenet_v3_large, ready.

    Image URLs on 127.0.0.1 (any port) are allowed, as for local development.
    """
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    backend: BackendProcess = start_backend(
        baked_dir,
        log,
        MODELS="resnet18,mobilenet_v3_large",
        WEIGHTS_CATALOG=str(weights_origin.catalog_path),
        URL_ALLOW_LOOPBACK="1",
        URL_ALLOWED_PORTS="any",
    )
    try:
        backend.wait_ready()
        yield backend
    finally:
        backend.stop()
