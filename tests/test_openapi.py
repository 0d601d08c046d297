"""The backend's OpenAPI description: valid, the same routes as the app, and a fuzz from it."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from backend.app import create_app
from backend.services import services
from backend.settings import Settings
from runtime.settings import SessionSettings


@pytest.fixture(scope="module")
def app(bundles_dir):
    app = create_app(
        Settings(bundles_dir=bundles_dir, models="resnet18", session=SessionSettings(threads=2))
    )
    # Every host resolves to a private address, so a fuzzed URL is refused (400) without a
    # lookup or a connection: nothing leaves this machine, no 502/504 from the network.
    serving = services(app)
    private = replace(serving.fetch_policy, resolver=lambda host, port: ["10.0.0.1"])
    replace(serving, fetch_policy=private).install(app)
    return app


def _served_routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        out |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_the_description_is_valid_and_names_exactly_the_served_routes(app):
    spec = app.test_client().get("/openapi.json").get_json()
    validate(spec)
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert described == _served_routes(app)


def test_the_description_states_this_instances_limits(bundles_dir):
    app = create_app(
        Settings(bundles_dir=bundles_dir, models="resnet18", max_top_k=7, background_load=True)
    )
    spec = app.test_client().get("/openapi.json").get_json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["top_k"]["maximum"] == 7


@pytest.mark.slow
def test_no_fuzzed_request_gets_a_server_error(app):
    """Whatever schemathesis sends, from valid to mangled, to every operation of the
    description: the answer is JSON and never a 5xx."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    cases = st.one_of([operation.as_strategy() for operation in operations])
    seen: set[tuple[str, int]] = set()

    @given(case=cases)
    @settings(
        max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case) -> None:
        response = case.call()
        seen.add((case.path, response.status_code))
        assert response.status_code < 500, (case.path, response.status_code, response.text[:300])
        headers = {name.lower(): values for name, values in response.headers.items()}
        assert headers["content-type"][0].startswith("application/json"), case.path
        case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])

    check()
    print(sorted(seen))
    assert {path for path, _ in seen} == {operation.path for operation in operations}
