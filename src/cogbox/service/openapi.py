"""The OpenAPI 3.1 document of the native API (/v1), built from its pydantic models."""

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cogbox.service.bodies import JSON_LIMIT_BYTES, UPLOAD_LIMIT_BYTES
from cogbox.service.models import (
    BatchBody,
    CreateSessionBody,
    EventList,
    ExecuteBody,
    ExecuteResult,
    FileList,
    PoolList,
    Problem,
    SessionInfo,
    SessionList,
)
from cogbox.service.native import PREFIX

# Native routes the document cannot describe (OpenAPI 3.1 has no WebSocket operations); its
# info.description names them instead.
UNDOCUMENTED_ROUTES = {("get", PREFIX + "/sessions/{ref}/stream")}

_MODELS: list[type[BaseModel]] = [
    BatchBody,
    CreateSessionBody,
    EventList,
    ExecuteBody,
    ExecuteResult,
    FileList,
    PoolList,
    Problem,
    SessionInfo,
    SessionList,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    ok: int,
    response: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    *,
    ref: bool = True,
    params: list[dict[str, Any]] | None = None,
    raw_response: str | None = None,
    raw_body: str | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): {"description": "success", **(_json(response) if response else {})},
        "400": {"description": "invalid request", **_json(Problem)},
        "401": {"description": "not signed, or signed wrongly", **_json(Problem)},
        "404": {"description": "no such session for this keypair", **_json(Problem)},
        "409": {"description": "the session runs no kernel", **_json(Problem)},
    }
    if raw_response:
        responses[str(ok)]["content"] = {
            raw_response: {"schema": {"type": "string", "format": "binary"}}
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = list(params or [])
    if ref:
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
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
        responses["413"] = {
            "description": f"the JSON body is over {JSON_LIMIT_BYTES >> 20} MiB",
            **_json(Problem),
        }
    if raw_body:
        responses["413"] = {
            "description": f"the file is over {UPLOAD_LIMIT_BYTES >> 20} MiB (per file), or "
            "the session's /home/work quota is full",
            **_json(Problem),
        }
        operation["requestBody"] = {
            "required": True,
            "content": {raw_body: {"schema": {"type": "string", "format": "binary"}}},
        }
    return operation


_PATH_QUERY = {
    "name": "path",
    "in": "query",
    "required": True,
    "description": "a path relative to /home/work",
    "schema": {"type": "string"},
}


def openapi_document() -> dict[str, Any]:
    """The document served at /openapi.json."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    s = PREFIX + "/sessions"
    one = s + "/{ref}"
    create = _op("create a session", 201, SessionInfo, CreateSessionBody, ref=False)
    create["responses"]["429"] = {
        "description": "keypair's session or memory limit",
        **_json(Problem),
    }
    create["responses"]["503"] = {"description": "the kernel did not start", **_json(Problem)}
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
                f"streaming: {one}/stream."
            ),
        },
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "backendai": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
        "security": [{"backendai": []}],
        "paths": {
            PREFIX + "/pools": {
                "get": _op(
                    "the warm pools: kernels kept ready for new sessions", 200, PoolList, ref=False
                )
            },
            s: {
                "get": _op("list this keypair's sessions", 200, SessionList, ref=False),
                "post": create,
            },
            one: {
                "get": _op("a session's state", 200, SessionInfo),
                "delete": _op("destroy a session (its files too)", 204),
            },
            one + "/execute": {
                "post": _op(
                    "run code to its end; input() gets an empty line",
                    200,
                    ExecuteResult,
                    ExecuteBody,
                )
            },
            one + "/batch": {
                "post": _op("run a build and an exec shell command", 200, ExecuteResult, BatchBody)
            },
            one + "/interrupt": {"post": _op("interrupt the running code", 204)},
            one + "/restart": {"post": _op("fresh kernel, files kept", 200, SessionInfo)},
            one + "/events": {"get": _op("the session's lifecycle events", 200, EventList)},
            one + "/logs": {
                "get": _op(
                    "the session's full log (stdout and stderr), streamed from byte `offset`; "
                    "with follow=1 until the session has ended. X-Cogbox-Log-Offset says "
                    "where the body starts",
                    200,
                    params=[
                        {
                            "name": "offset",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        },
                    ],
                    raw_response="application/octet-stream",
                )
            },
            one + "/files": {
                "get": _op(
                    "list a folder of /home/work",
                    200,
                    FileList,
                    params=[{**_PATH_QUERY, "required": False}],
                )
            },
            one + "/files/content": {
                "get": _op(
                    "download a file",
                    200,
                    params=[_PATH_QUERY],
                    raw_response="application/octet-stream",
                ),
                "put": _op(
                    "upload a file", 204, params=[_PATH_QUERY], raw_body="application/octet-stream"
                ),
            },
        },
    }
