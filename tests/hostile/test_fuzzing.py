"""Schema fuzzing: schemathesis generates requests for every documented operation from the
OpenAPI schema, valid and not, and checks each response: never a 5xx, always a documented
status, content type and body shape. Bounded in examples and time so the suite stays quick."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 15


def test_every_operation_answers_as_documented(hostile_url):
    schema = schemathesis.openapi.from_url(f"{hostile_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29  # Ours, TensorFlow Serving's and KServe v2's.
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=hostile_url, timeout=30)
            assert response.status_code < 500, response.text[:300]
            # A schema-valid image can still be blank or too large: that is semantics no
            # schema can state, so `positive_data_acceptance` does not apply.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (AssertionError, BaseExceptionGroup) as error:  # Report every operation's.
            failures.append(f"{operation.label}: {error}"[:2000])
    assert not failures, "\n\n".join(failures)


def test_the_schema_covers_every_api(hostile_url):
    paths = httpx.get(f"{hostile_url}/openapi.json").json()["paths"]
    for path in (
        "/predict",
        "/predict/batch",
        "/model",
        "/v1/models/{model_name}:predict",
        "/v2/models/{model_name}/infer",
    ):
        assert path in paths
