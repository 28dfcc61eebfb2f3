"""Fuzz every operation of the running service's OpenAPI schema with schemathesis.

Whatever schemathesis sends (valid and invalid parameters, random bodies of
every declared media type), the server must never answer 5xx other than a
503 for overload, must answer with a status the schema declares for that
operation, with the declared content type, in the declared shape, and must
still be alive afterwards. The number of examples per operation is fixed and
generation is derandomised, so the CI run is bounded and repeatable.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from tests.helpers import ServerProcess

EXAMPLES_PER_OPERATION = 40
MODEL = "resnet20-cifar10"
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@schemathesis.serializer("image/*")
def _image_body(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """Raw image bodies: what schemathesis generated for a binary string, as bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _aim(case: schemathesis.Case, aimed: bool) -> schemathesis.Case:
    """Half the cases name the served model and version, so they get past the 404."""
    if aimed and case.path_parameters:
        if "model" in case.path_parameters:
            case.path_parameters["model"] = MODEL
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
    return case


def _fuzz(operation: schemathesis.APIOperation) -> None:
    strategy = st.builds(_aim, operation.as_strategy(), st.booleans())

    # Decorated here: the operations exist only once the server is running.
    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()


def test_every_operation_survives_fuzzing(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6, "the schema lists too few operations to mean anything"

    failures = {}
    for operation in operations:
        try:
            _fuzz(operation)
        except (Exception, BaseExceptionGroup) as exc:  # all operations first, then failures
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:2000]
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())


def test_server_still_ready_after_fuzzing(server: ServerProcess) -> None:
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/health/ready", timeout=10).status_code == 200
    log = server.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:4000]
