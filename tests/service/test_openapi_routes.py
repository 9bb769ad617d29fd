"""The native routes and /openapi.json come from one table (service/operations.py): the app
serves exactly the declared operations, and each one's description is complete (a summary,
models the document defines, every $ref resolvable)."""

import json
import re
from pathlib import Path

from cogbox.service.app import create_app
from cogbox.service.db import Database
from cogbox.service.native import PREFIX
from cogbox.service.openapi import NATIVE_OPERATIONS, UNDOCUMENTED_ROUTES, openapi_document
from tests.fakes.agent import FakeAgent
from tests.fakes.manager import service_config


def test_the_app_serves_exactly_the_declared_native_operations_and_head_beside_get(
    tmp_path: Path,
) -> None:
    config = service_config(tmp_path)
    db = Database(config.database_url)
    app = create_app(config, db=db, agent=FakeAgent(tmp_path / "w"))
    db.close()
    native = [
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith(PREFIX + "/")
    ]
    served = {(method, path) for method, path in native if method != "head"}
    declared = {(op.method, op.path) for op in NATIVE_OPERATIONS}
    heads = {path for method, path in native if method == "head"}
    gets = {op.path for op in NATIVE_OPERATIONS if op.method == "get"}
    assert (sorted(served - declared), sorted(declared - served), sorted(gets ^ heads)) == (
        [],
        [],
        [],  # every GET answers HEAD too (aiohttp registers a GET with add_get)
    )


def test_every_documented_operation_has_a_summary_and_models_the_document_defines() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    unsummarised = [
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if not operation.get("summary")
    ]
    named = {
        model.__name__
        for op in NATIVE_OPERATIONS
        if op.doc is not None
        for model in (op.doc.response, op.doc.body)
        if model is not None
    }
    assert (unsummarised, sorted(refs - set(schemas)), sorted(named - set(schemas))) == (
        [],
        [],
        [],
    )


def test_the_undocumented_routes_are_named_in_the_description() -> None:
    description = openapi_document()["info"]["description"]
    assert (
        bool(UNDOCUMENTED_ROUTES),
        [path for _, path in UNDOCUMENTED_ROUTES if path not in description],
    ) == (True, [])
