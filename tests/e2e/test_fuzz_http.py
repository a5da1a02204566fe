"""schemathesis against the gateway's own OpenAPI document, on the live system: no 5xx,
no answer outside the documented statuses, content types and schemas. Bounded budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fakes.jwks_fake import FakeAuth
from tools.processes import SERVICES, System, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth() -> Iterator[FakeAuth]:
    with FakeAuth() as fake:
        yield fake


@pytest.fixture(scope="module", params=["users-off", "users-on"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system as `make run` starts it, and with signed-in users required (AUTH_REQUIRED,
    the bearer scheme in the OpenAPI document, whose header schemathesis fuzzes)."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    env = {"DATA_DIR": str(tmp / "data"), "OPENAI_API_KEY": "", "LOG_LEVEL": "WARNING", "IMAGE_SIZE": "256x256"}
    if request.param == "users-on":
        fake: FakeAuth = request.getfixturevalue("auth")
        env |= {"AUTH_REQUIRED": "true", "AUTH_JWKS_URL": fake.jwks_url, "AUTH_ISSUER": fake.issuer}
    system = System.configure(env, {name: free_port() for name in SERVICES}, log_dir=tmp / "logs")
    system.start_all()
    yield system
    system.stop_all()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_gateway_answers_every_generated_request_within_its_contract(live: System, auth: FakeAuth) -> None:
    schema = schemathesis.openapi.from_url(f"{live.gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 6
    token = auth.token("fuzz-user-0001")
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            case.validate_response(response, checks=CHECKS)
            assert "Traceback" not in response.text

        call()
        if "AUTH_REQUIRED" not in live.env:
            continue

        # With a valid user token, past the door: the routes themselves under fuzzed input.

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def signed_in(case: schemathesis.Case) -> None:
            response = case.call(timeout=30, headers={"Authorization": f"Bearer {token}"})
            case.validate_response(response, checks=CHECKS)
            assert "Traceback" not in response.text

        signed_in()
