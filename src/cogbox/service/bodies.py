"""Request bodies, read within per-route limits: the one JSON-body parser of every route, and
uploads streamed in chunks.

The application's own `client_max_size` is the JSON limit; nothing reads a body whole except
`json_object`, which refuses (413) a declared Content-Length over its limit before reading a
byte and stops reading once the limit is passed. Uploads never pass through it: their bytes
go to the session's /home/work a chunk at a time (`SessionManager.upload`).
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cogbox.service.errors import bad_request, too_large

JSON_LIMIT_BYTES = 1 << 20
UPLOAD_LIMIT_BYTES = 256 << 20  # per uploaded file; the session's quota bounds them all
MAX_JSON_DEPTH = 32
CHUNK_BYTES = 1 << 20


async def json_object(request: web.Request, limit: int = JSON_LIMIT_BYTES) -> dict[str, Any]:
    """The request's JSON object body (`{}` when empty).

    413 over `limit` bytes; 400 naming the problem when it is not JSON, not an object,
    nested deeper than MAX_JSON_DEPTH, or holds NaN/Infinity."""
    raw = await read_limited(request, limit, "the JSON request body")
    if not raw.strip():
        return {}
    return parse_json_object(raw, "the request body")


def parse_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    """`raw` parsed as a JSON object (a request body, a WebSocket frame); 400 naming `what`
    when it is not JSON, not an object, nested deeper than MAX_JSON_DEPTH, or holds NaN."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise _too_deep(what)
    return value


async def read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body, refused (413, naming `what` and `limit`) once it passes `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(what, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise too_large(what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The raw body a chunk at a time (a native upload)."""
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        yield chunk


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(what: str) -> Exception:
    return bad_request(
        f"{what} is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects"
    )


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (iterative: no recursion)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest
