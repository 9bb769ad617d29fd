"""The OpenAPI 3.1 document of the native API (/v1), built from its pydantic models."""

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cogbox.service import log_routes, native
from cogbox.service.bodies import JSON_LIMIT_BYTES, UPLOAD_LIMIT_BYTES
from cogbox.service.models import Problem
from cogbox.service.operations import Doc, Operation

# Every native operation, declared once beside its handler (cogbox.service.operations).
NATIVE_OPERATIONS: list[Operation] = [*native.OPERATIONS, *log_routes.OPERATIONS]
# Native routes the document cannot describe (OpenAPI 3.1 has no WebSocket operations); its
# info.description names them instead.
UNDOCUMENTED_ROUTES = {(op.method, op.path) for op in NATIVE_OPERATIONS if op.doc is None}
# The models the operations name (with the ones they nest), and every refusal's body.
_MODELS: list[type[BaseModel]] = sorted(
    {
        model
        for op in NATIVE_OPERATIONS
        if op.doc is not None
        for model in (op.doc.response, op.doc.body)
        if model is not None
    }
    | {Problem},
    key=lambda model: model.__name__,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _op(doc: Doc) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(doc.ok): {"description": "success", **(_json(doc.response) if doc.response else {})},
        "400": {"description": "invalid request", **_json(Problem)},
        "401": {"description": "not signed, or signed wrongly", **_json(Problem)},
        "404": {"description": "no such session for this keypair", **_json(Problem)},
        "409": {"description": "the session runs no kernel", **_json(Problem)},
    }
    if doc.raw_response:
        responses[str(doc.ok)]["content"] = {
            doc.raw_response: {"schema": {"type": "string", "format": "binary"}}
        }
    operation: dict[str, Any] = {"summary": doc.summary, "responses": responses}
    parameters = list(doc.params)
    if doc.ref:
        parameters.insert(
            0,
            {
                "name": "ref",
                "in": "path",
                "required": True,
                "description": "the session's id or name",
                "schema": {"type": "string"},
            },
        )
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None:
        operation["requestBody"] = {"required": True, **_json(doc.body)}
        responses["413"] = {
            "description": f"the JSON body is over {JSON_LIMIT_BYTES >> 20} MiB",
            **_json(Problem),
        }
    if doc.raw_body:
        responses["413"] = {
            "description": f"the file is over {UPLOAD_LIMIT_BYTES >> 20} MiB (per file), or "
            "the session's /home/work quota is full",
            **_json(Problem),
        }
        operation["requestBody"] = {
            "required": True,
            "content": {doc.raw_body: {"schema": {"type": "string", "format": "binary"}}},
        }
    for status, why in doc.refusals:
        responses[str(status)] = {"description": why, **_json(Problem)}
    return operation


def _paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for op in NATIVE_OPERATIONS:
        if op.doc is not None:
            paths.setdefault(op.path, {})[op.method] = _op(op.doc)
    return paths


def openapi_document() -> dict[str, Any]:
    """The document served at /openapi.json."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cogbox native API",
            "version": "1.0.0",
            "description": (
                "Sandboxed, persistent code sessions. Sign every request as Backend.AI's "
                "clients do (Authorization: BackendAI signMethod=HMAC-SHA256, "
                "credential=ACCESS_KEY:SIGNATURE; Date; X-BackendAI-Version). Run output "
                "is a list of cogbox events ({kind: stdout|stderr|display|result|error|"
                "input_request|output_truncated|finished|kernel_died, ...}). WebSocket "
                f"streaming: {', '.join(sorted(path for _, path in UNDOCUMENTED_ROUTES))}."
            ),
        },
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "backendai": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
        "security": [{"backendai": []}],
        "paths": _paths(),
    }
