"""Shared fixtures: generated weights served from 127.0.0.1, fetched, baked into bundles.

Each stage runs the real code once per test session and is shared: fetching (weights.fetch)
and baking (bake.pipeline: export, verify, bundle) the two small models is the slow part of
the suite, so every test that needs a bundle uses these.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bake.pipeline import bake
from tests.backend_process import BackendProcess, start_backend
from tests.origin import OriginServer, WeightsOrigin, make_origin
from weights.fetch import fetch

SMALL = ["resnet18", "mobilenet_v3_large"]


@pytest.fixture(scope="session")
def weights_origin(tmp_path_factory) -> WeightsOrigin:
    """resnet18, mobilenet_v3_large (torchvision-style) and a Hub resnet18, served locally."""
    with OriginServer() as server:
        yield make_origin(tmp_path_factory.mktemp("origin"), server)


@pytest.fixture(scope="session")
def baked_dir(weights_origin: WeightsOrigin, tmp_path_factory) -> Path:
    """A weights directory filled by the real fetch code: resnet18 and mobilenet_v3_large."""
    dest = tmp_path_factory.mktemp("fetched")
    fetch(SMALL, dest, catalog=weights_origin.catalog, progress=False)
    return dest


@pytest.fixture(scope="session")
def bundles_dir(baked_dir: Path, weights_origin: WeightsOrigin, tmp_path_factory) -> Path:
    """Those weights compiled by the real bake step: two verified ONNX bundles."""
    dest = tmp_path_factory.mktemp("bundles")
    bake(SMALL, baked_dir, dest, catalog=weights_origin.catalog, say=lambda _: None)
    return dest


@pytest.fixture(scope="session")
def backend_server(bundles_dir: Path, tmp_path_factory):
    """A real backend (python -m backend) serving resnet18 and mobilenet_v3_large, ready.

    Image URLs on 127.0.0.1 (any port) are allowed, as for local development.
    """
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    backend: BackendProcess = start_backend(
        bundles_dir, log, URL_ALLOW_LOOPBACK="1", URL_ALLOWED_PORTS="any"
    )
    try:
        backend.wait_ready()
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def docker_engine():
    """A private Docker Engine 20.10 with the builder and Python stand-ins imported."""
    from tests import containers, dockerd

    try:
        dockerd.ensure_tools()
        containers.ensure_python_base()
    except containers.ContainerToolsUnavailable as exc:
        pytest.fail(f"{exc}: run scripts/install-system-packages.sh as root")
    scratch = Path(tempfile.mkdtemp(prefix="dockerd-", dir="/var/tmp"))
    engine = dockerd.Docker(scratch).start()
    try:
        dockerd.import_stand_ins(engine, scratch)
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(scratch, ignore_errors=True)
