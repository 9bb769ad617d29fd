"""Reading sessions' full logs over HTTP, streamed from the file (never whole in memory).

GET /v1/sessions/{ref}/logs?offset=N&follow=1   the raw log from byte N (default 0);
    with follow, the response stays open and sends what the session prints until it
    has ended. `X-Cogbox-Log-Offset` says where the body starts; a client that lost
    the connection resumes with offset = that + the bytes it got.
GET /session/{ref}/logs                          Backend.AI's `session logs`:
    {"result": {"logs": "..."}}, the JSON written as the file is read.
"""

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from cogbox.service.auth import keypair_of
from cogbox.service.db import SessionRecord
from cogbox.service.errors import bad_request
from cogbox.service.logs import stream_log
from cogbox.service.native import PREFIX
from cogbox.service.operations import Doc, OperationTable
from cogbox.service.sessions import SessionManager
from cogbox.service.status import ENDED

log = logging.getLogger(__name__)
FOLLOW_POLL_S = 0.2


OPERATIONS = OperationTable()  # the native API's (cogbox.service.operations)


@OPERATIONS.get(
    PREFIX + "/sessions/{ref}/logs",
    Doc(
        "the session's full log (stdout and stderr), streamed from byte `offset`; with "
        "follow=1 until the session has ended. X-Cogbox-Log-Offset says where the body starts",
        200,
        params=(
            {
                "name": "offset",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
        ),
        raw_response="application/octet-stream",
    ),
)
async def native_logs(manager: SessionManager, request: web.Request) -> web.StreamResponse:
    record = await manager.find(keypair_of(request), request.match_info["ref"])
    offset = _offset(request.query.get("offset", "0"))
    follow = request.query.get("follow", "") in ("1", "true", "yes")
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "X-Cogbox-Log-Offset": str(offset),
        }
    )
    await response.prepare(request)
    try:
        async for chunk in log_chunks(manager, record, offset, follow, _connected(request)):
            await response.write(chunk)  # waits while the client is slow: backpressure
        await response.write_eof()
    except ConnectionResetError:
        log.info("the reader of session %s's log went away", record.id)
    return response


def routes(manager: SessionManager) -> list[web.AbstractRouteDef]:
    """The native log route and Backend.AI's `session logs`."""
    table = web.RouteTableDef()

    @table.get("/session/{ref}/logs")
    async def backendai_logs(request: web.Request) -> web.StreamResponse:
        record = await manager.find(keypair_of(request), request.match_info["ref"])
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            await response.write(b'{"result": {"logs": "')
            async for chunk in log_chunks(manager, record, 0, follow=False):
                await response.write(_json_text(decoder.decode(chunk)))
            await response.write(_json_text(decoder.decode(b"", True)) + b'"}}')
            await response.write_eof()
        except ConnectionResetError:
            log.info("the reader of session %s's log went away", record.id)
        return response

    return [*OPERATIONS.routes(manager), *table]


async def log_chunks(
    manager: SessionManager,
    record: SessionRecord,
    offset: int,
    follow: bool,
    connected: Callable[[], bool] = lambda: True,
) -> AsyncIterator[bytes]:
    """The session's log from `offset`; with `follow`, until the session has ended and all
    it printed was sent. The status is read before each pass over the file: once a session
    has ended its log is closed, so the pass that follows reads all there is."""
    logs_dir = manager.config.logs_dir
    while True:
        current = await asyncio.to_thread(manager.db.get_session, record.id)
        ended = current is None or current.status in ENDED
        async for chunk in stream_log(logs_dir, record.id, offset):
            offset += len(chunk)
            yield chunk
        if ended or not follow or not connected():
            return
        keypair = await asyncio.to_thread(manager.db.get_keypair, record.access_key)
        if keypair is None or not keypair.is_active:
            return  # a revoked keypair's streams end
        await asyncio.sleep(FOLLOW_POLL_S)


def _connected(request: web.Request) -> Callable[[], bool]:
    """Whether the client is still there (a follower that waits writes nothing, so it
    would not notice otherwise)."""
    return lambda: request.transport is not None and not request.transport.is_closing()


def _offset(value: str) -> int:
    if not value.isdigit():
        raise bad_request(f"'offset' must be a byte offset (0 or more), got {value!r}")
    return int(value)


def _json_text(text: str) -> bytes:
    """`text` as the inside of a JSON string."""
    return json.dumps(text)[1:-1].encode()
