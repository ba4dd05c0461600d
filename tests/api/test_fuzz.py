"""Property-based fuzzing of the whole HTTP API with schemathesis, on SQLite and PostgreSQL.

For every operation of ``/openapi.json`` schemathesis sends the documented examples, the
boundary cases of its coverage phase, and random schema-valid (positive) and schema-violating
(negative) requests, and checks every answer:

- never a 5xx (``not_a_server_error``: docs/api.md "Errors": no 500 for client input);
- a documented status code, content type and headers, and a body that matches the documented
  schema (``status_code_conformance``, ``content_type_conformance``,
  ``response_headers_conformance``, ``response_schema_conformance``);
- a 405 names the path's methods in ``Allow`` (``allow_header_conformance``,
  ``unsupported_method``);
- query and path parameters that violate the schema are refused (``negative_data_rejection``).

Left out, and why (see ``CONFIG``):

- ``positive_data_acceptance`` (a schema-valid request must not get a 4xx): the API refuses
  some schema-valid requests on rules JSON Schema cannot state, and rightly: strings are
  trimmed before their length is checked (``" "`` is an empty name), a ``PUT`` may not change
  a policy's name, a duration string may not exceed ten years, ``params`` may hold no NUL
  and nest at most 32 levels, a condition at most 8.
- ``negative_data_rejection`` on request bodies, for the same trimming: a generated
  "too long" string that ends in whitespace is legitimately accepted once trimmed.
- ``allow_header_conformance`` on ``/api/v1/policies/reload``, ``/evaluate`` and
  ``/backtest``: those URLs
  are also ``/api/v1/policies/{name}`` (a policy may be called ``reload``), so the server
  rightly answers ``Allow: DELETE, GET, POST, PUT`` where the document lists ``POST`` only.
- No 413 check is needed: the generated bodies stay far below the 16 MiB body limit.
- Access control (``ignored_auth``, ``missing_required_header`` on keys): the fuzzed app runs
  with ``VIGIL_AUTH=off``, so that a key the fuzzer creates does not lock it out of the
  operations after; ``tests/api/test_access.py`` walks every route with every role.

Reproducible: derandomized, with a fixed seed and no example database, so CI sends the same
requests every run; a failure prints the offending request as a curl command. Bounded: the
fuzzing phase sends at most ``MAX_EXAMPLES`` requests per operation, and the coverage phase
is off for the two policy bodies (about 960 boundary cases each): about a minute for both
databases on a 2-core machine.

Each operation runs against its own app and database (schemathesis starts the app's lifespan
on its own event loop and ends it when the test ends), seeded with policies and actions so
that reads and cancels also reach real rows.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests import services
from tests.api.support import started_client
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.settings import Settings

MAX_EXAMPLES = 30
SEED = 20260119

POLICIES = """\
policies:
  - name: cpu-hot
    target: web-*
    auto_remediate: true
    condition: {type: metric_exceeds, metric: cpu_usage, threshold: 80}
    action: scale-up
    params: {replicas: 2}
  - name: disk-low
    severity: critical
    condition:
      type: any
      conditions:
        - {type: metric_below, metric: disk_free_percent, threshold: 5}
        - {type: metric_exceeds, metric: disk_used_percent, threshold: 95}
    action: custom
"""

# Requests that leave actions in several states: 1 pending (policy), 2 cancelled, 3 pending.
SEED_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/ingest", {"name": "cpu_usage", "value": 95, "target": "web-01"}),
    ("POST", "/api/v1/actions", {"target": "db-01", "action": "restart-service"}),
    ("PUT", "/api/v1/actions/2/cancel", {"reason": "seeded"}),
    ("POST", "/api/v1/actions", {"target": "db-02", "action": "custom", "params": {"k": "v"}}),
]

# The document the requests are generated from: that of an app that is never started (the
# tests' apps are built from the same default settings, so they serve the same document).
DOCUMENT_APP = create_app(Settings(database_url="sqlite:///never-opened.db"), run_runner=False)
DOCUMENT = DOCUMENT_APP.openapi()
BODY_OPERATIONS = [
    f"{method.upper()} {path}"
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if "requestBody" in operation
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # NUL is refused in every string (PostgreSQL cannot store it); generating it
            # would only exercise that one refusal.
            "allow-x00": False,
        },
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            "ignored_auth": {"enabled": False},
        },
        "operations": [
            {
                "include-name": BODY_OPERATIONS,
                "checks": {"negative_data_rejection": {"enabled": False}},
            },
            {
                "include-path": [
                    "/api/v1/policies/reload",
                    "/api/v1/policies/evaluate",
                    "/api/v1/policies/backtest",
                ],
                "checks": {"allow_header_conformance": {"enabled": False}},
            },
            {
                "include-name": ["POST /api/v1/policies", "PUT /api/v1/policies/{name}"],
                "phases": {"coverage": {"enabled": False}},
            },
        ],
    }
)

# OTLP's binary bodies (/v1/metrics): random bytes, sent as they are.
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
# Requests go in-process (ASGI transport); each test passes its own app to call_and_validate.
schema.app = DOCUMENT_APP


def _seed(url: str, policies_file: Path) -> None:
    async def run() -> None:
        settings = Settings(database_url=url, policies_file=policies_file)
        async with started_client(settings, clock=FakeClock()) as (client, _):
            for method, path, body in SEED_REQUESTS:
                r = await client.request(method, path, json=body)
                assert r.status_code < 300, (path, r.text)

    asyncio.run(run())


@pytest.fixture(scope="module")
def seed_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-policies") / "policies.yaml"
    path.write_text(POLICIES)
    return path


@pytest.fixture(scope="module")
def sqlite_template(
    sqlite_template: Path, seed_policies: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The migrated SQLite template, with seeded policies."""
    path = tmp_path_factory.mktemp("fuzz-sqlite") / "vigil.db"
    shutil.copy(sqlite_template, path)
    _seed(f"sqlite:///{path}", seed_policies)
    return path


@pytest.fixture(scope="module")
def postgres_template(postgres_template: str, seed_policies: Path) -> Iterator[str]:
    """The migrated PostgreSQL template, with seeded policies."""
    name = services.create_database(postgres_template)
    _seed(services.database_url(name), seed_policies)
    yield name
    services.drop_database(name)


@pytest.fixture
def policies_file(seed_policies: Path) -> Path:
    return seed_policies


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"auth": "off"}


@pytest.fixture
def fuzz_app(settings: Settings, container: Container) -> FastAPI:
    """An app on this test's database; schemathesis starts it at the first request."""
    # The document depends on the settings only through these limits (building the document
    # again, to compare it, would cost a quarter of a second per operation).
    assert container.limits == DOCUMENT_APP.state.container.limits
    return create_app(settings, container, run_runner=False)


@schema.parametrize()
# No deadline: a request's time depends on the machine and the database, not on the input.
# The app fixture is shared by the examples of one operation, on purpose: what a request
# created is there for the next one.
@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz(case: schemathesis.Case[Any], fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app)
