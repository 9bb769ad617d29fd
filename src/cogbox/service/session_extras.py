"""Backend.AI's `session rename` and `session events` routes.

    POST /session/{ref}/rename?name=NEW     rename an active session: 204
    GET  /events/session?sessionName=N      Server-Sent Events of the session's lifecycle
         (or sessionId=ID; scope=*|session|kernel)

Events are the session's recorded events (the ones `GET /v1/sessions/{id}/events` lists),
sent as they are recorded, as `event: session_<kind>` with JSON data `{sessionId,
sessionName, reason, message, at}`; Backend.AI's names for the main transitions
(`session_started`, `session_terminated`, ...). Once the session has ended the stream sends
`server_close` (the client's signal to stop, not to reconnect) and closes.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable

from aiohttp import web

from cogbox.service.db import EventRecord, KeypairRecord, SessionRecord
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.sessions import SessionManager
from cogbox.service.status import ENDED

POLL_SECONDS = 0.25
MAX_STREAM_SECONDS = 24 * 3600.0
MAX_STREAMS_PER_KEYPAIR = 8  # each polls the database: bounded, so no tenant can flood it
_BACKENDAI_KIND = {
    "created": "session_enqueued",
    "building": "session_preparing",
    "starting": "session_preparing",
    "running": "session_started",
    "terminated": "session_terminated",
    "destroyed": "session_terminated",
    "idle_reaped": "session_terminated",
    "lifetime_reached": "session_terminated",
    "dead": "kernel_terminated",
    "error": "session_failure",
    "lost": "session_failure",
}


def add_routes(
    table: web.RouteTableDef,
    manager: SessionManager,
    keypair_of: Callable[[web.Request], KeypairRecord],
) -> None:
    open_streams: dict[str, int] = {}

    @table.post("/session/{ref}/rename")
    async def rename(request: web.Request) -> web.Response:
        record = await manager.find(keypair_of(request), request.match_info["ref"])
        name = request.query.get("name")
        if not name:
            raise bad_request("'name' (a query parameter) is required: the session's new name")
        await manager.rename(record, name)
        return web.Response(status=204)

    @table.get("/events/session")
    async def events(request: web.Request) -> web.StreamResponse:
        scope = request.query.get("scope", "*")
        if scope not in ("*", "session", "kernel"):
            raise bad_request(f"'scope' must be '*', 'session' or 'kernel', not {scope!r}")
        ref = request.query.get("sessionId") or request.query.get("sessionName")
        if not ref:
            raise bad_request("'sessionName' or 'sessionId' (a query parameter) is required")
        keypair = keypair_of(request)
        record = await manager.find(keypair, ref)
        held = open_streams.get(keypair.access_key, 0)
        if held >= MAX_STREAMS_PER_KEYPAIR:
            raise ServiceError(
                429,
                "too-many-streams",
                f"keypair {keypair.access_key} already follows {held} event streams (the "
                f"limit is {MAX_STREAMS_PER_KEYPAIR}): close one first",
            )
        open_streams[keypair.access_key] = held + 1
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the client went away
                await _stream(response, manager, record, scope)
            return response
        finally:
            open_streams[keypair.access_key] -= 1


async def _stream(
    response: web.StreamResponse, manager: SessionManager, record: SessionRecord, scope: str
) -> None:
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_SECONDS
    while True:
        current = await asyncio.to_thread(manager.db.get_session, record.id)
        recorded = await manager.events(record)
        for event in recorded[seen:]:
            kind = sse_kind(event)
            if scope == "*" or kind.startswith(scope):
                await response.write(_message(kind, record, event))
        seen = len(recorded)
        if current is None or current.status in ENDED or loop.time() > deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    await response.write(b"event: server_close\ndata: {}\n\n")
    await response.write_eof()


def sse_kind(event: EventRecord) -> str:
    """Backend.AI's name for a cogbox session event."""
    return _BACKENDAI_KIND.get(event.kind, f"session_{event.kind}")


def _message(kind: str, record: SessionRecord, event: EventRecord) -> bytes:
    data = {
        "sessionId": record.id,
        "sessionName": record.name,
        "reason": event.reason,
        "message": event.message,
        "at": event.at,
    }
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
