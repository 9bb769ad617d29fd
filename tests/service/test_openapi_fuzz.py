"""Schemathesis against /openapi.json: generated requests (signed) never cause a 5xx.

Attack family: bugs in the service's own API (malformed bodies, odd paths and parameters).
The `ref` path parameter is pinned to a real session so generated runs, uploads and
downloads reach a live kernel instead of stopping at 404.
"""

import copy
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.support import Service, Signer

EXAMPLES_PER_OPERATION = 15


def _pinned(document: dict[str, Any], ref: str) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "ref":
                    parameter["schema"] = {"type": "string", "enum": [ref]}
    return document


def test_no_generated_request_causes_a_server_error(service: Service) -> None:
    keys = service.keypair("--max-sessions", "3")
    http = requests.Session()
    http.auth = Signer(keys.access_key, keys.secret_key)
    target = keys.create()["id"]
    document = requests.get(service.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(_pinned(document, target))
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Destroying the target last keeps it alive for the other operations.
    operations.sort(key=lambda op: (op.method.upper() == "DELETE", op.path))
    server_errors: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call(base_url=service.url, session=http, timeout=60)
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:200]}"
                )

        fuzz()
    assert (len(operations) >= 12, server_errors) == (True, [])
