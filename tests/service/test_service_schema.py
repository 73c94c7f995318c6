"""A bounded schemathesis run against the app's own OpenAPI schema (in-process ASGI).

Every operation gets generated requests (valid and invalid, 30 examples each); the service must
never answer 5xx, must only use documented status codes and content types, and its bodies must
match the documented schemas (problem responses included). The operations are read from the
schema at collection time so that each one is a test of its own.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_fixture_models import API_KEY

from service.app import create_app
from service.settings import Settings

CHECKS = [
    checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Building the app has no side effects (models load in the lifespan), so the schema is cheap.
_SPEC = create_app(Settings(model_store="/nonexistent")).openapi()
OPERATIONS = [(method.upper(), path) for path, item in _SPEC["paths"].items() for method in item]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_conforms_and_never_fails(make_settings: Any, method: str, path: str) -> None:
    app = create_app(make_settings(max_wait_ms=0.0))
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)

    run()


def test_every_documented_error_is_a_problem_document() -> None:
    for path, item in _SPEC["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
    assert "HTTPValidationError" not in _SPEC["components"]["schemas"]


def test_inference_routes_document_their_problems() -> None:
    identify = _SPEC["paths"]["/v1/identify"]["post"]["responses"]
    assert {"413", "415", "422", "429", "504"} <= set(identify)
    infer = _SPEC["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert {"400", "413", "429", "504"} <= set(infer) and "422" not in infer
