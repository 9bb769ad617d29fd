"""cogbox's native API under /v1: sessions, runs (request/response and WebSocket), files and
session events, speaking the kernel's own event model (`event_to_dict`). See /openapi.json.

    WebSocket /v1/sessions/{ref}/stream
      client -> {"code": "...", "timeout": 30}   starts a run (one at a time)
                {"exec": "...", "build": null, "timeout": 30}
                                                 starts a batch run (the body of /batch)
                {"input": "text"}                answers the running code's input()
                {"interrupt": true}              interrupts it
      server -> one JSON frame per event: {"kind": "stdout", "text": "..."}, ...,
                {"kind": "finished", ...}; errors as {"kind": "problem", ...problem body}.
                The next run may be sent as soon as the terminal frame arrives. The server
                closes with 1008 and a reason when the keypair is revoked or the client
                stopped reading (see cogbox.service.streams).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from cogbox.kernel.events import Event, Finished, InputRequest, KernelDied, event_to_dict
from cogbox.service.agent import BatchCommand
from cogbox.service.auth import keypair_of
from cogbox.service.bodies import (
    UPLOAD_LIMIT_BYTES,
    body_chunks,
    json_object,
    parse_json_object,
)
from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError, bad_request, too_large
from cogbox.service.models import (
    BatchBody,
    CreateSessionBody,
    EventList,
    ExecuteBody,
    ExecuteResult,
    FileInfo,
    FileList,
    PoolInfo,
    PoolList,
    SessionInfo,
    SessionList,
    event_info,
    session_info,
)
from cogbox.service.operations import Doc, OperationTable
from cogbox.service.session_files import read_chunks
from cogbox.service.session_request import CreateRequest
from cogbox.service.sessions import SessionManager
from cogbox.service.streams import StreamClosed, StreamSender, streams_of
from cogbox.service.vfolders import parse_mount_args

log = logging.getLogger(__name__)
PREFIX = "/v1"
_Model = TypeVar("_Model", bound=BaseModel)


OPERATIONS = OperationTable()
_S = PREFIX + "/sessions"
_ONE = _S + "/{ref}"
PATH_QUERY = {
    "name": "path",
    "in": "query",
    "required": True,
    "description": "a path relative to /home/work",
    "schema": {"type": "string"},
}


def routes(manager: SessionManager) -> list[web.RouteDef]:
    return OPERATIONS.routes(manager)


async def _session_of(manager: SessionManager, request: web.Request) -> SessionRecord:
    return await manager.find(keypair_of(request), request.match_info["ref"])


def _info(manager: SessionManager, record: SessionRecord) -> dict[str, Any]:
    return session_info(
        record, manager.is_busy(record), manager.last_used(record), manager.build_step(record)
    ).model_dump()


@OPERATIONS.get(
    PREFIX + "/pools",
    Doc("the warm pools: kernels kept ready for new sessions", 200, PoolList, ref=False),
)
async def list_pools(manager: SessionManager, request: web.Request) -> web.Response:
    pools = [PoolInfo(**vars(state)) for state in manager.agent.pools()]
    return _json(PoolList(pools=pools))


@OPERATIONS.get(_S, Doc("list this keypair's sessions", 200, SessionList, ref=False))
async def list_sessions(manager: SessionManager, request: web.Request) -> web.Response:
    records = await manager.list_sessions(keypair_of(request))
    return _json(SessionList.model_validate({"sessions": [_info(manager, r) for r in records]}))


@OPERATIONS.post(
    _S,
    Doc(
        "create a session",
        201,
        SessionInfo,
        CreateSessionBody,
        ref=False,
        refusals=(
            (429, "keypair's session or memory limit"),
            (503, "the kernel did not start"),
        ),
    ),
)
async def create_session(manager: SessionManager, request: web.Request) -> web.Response:
    body = await _body(request, CreateSessionBody)
    mounts, mount_map = parse_mount_args(body.mounts)
    record, _ = await manager.create(
        keypair_of(request),
        CreateRequest(
            image=body.image,
            name=body.name,
            idle_timeout=body.idle_timeout,
            max_lifetime=body.max_lifetime,
            env=body.env,
            memory_bytes=body.memory_bytes,
            output_limit=body.output_limit,
            session_type=body.type,
            startup_command=body.startup_command,
            dependencies=body.depends,
            batch_timeout=body.batch_timeout,
            mounts=mounts,
            mount_map=mount_map,
            cpus=body.cpus,
            bootstrap_script=body.bootstrap_script,
            runtime=body.runtime,
        ),
    )
    return web.json_response(_info(manager, record), status=201)


@OPERATIONS.get(_ONE, Doc("a session's state", 200, SessionInfo))
async def session_state(manager: SessionManager, request: web.Request) -> web.Response:
    return web.json_response(_info(manager, await _session_of(manager, request)))


@OPERATIONS.delete(_ONE, Doc("destroy a session (its files too)", 204))
async def destroy_session(manager: SessionManager, request: web.Request) -> web.Response:
    await manager.destroy(await _session_of(manager, request))
    return web.Response(status=204)


@OPERATIONS.post(
    _ONE + "/execute",
    Doc("run code to its end; input() gets an empty line", 200, ExecuteResult, ExecuteBody),
)
async def execute(manager: SessionManager, request: web.Request) -> web.Response:
    record = await _session_of(manager, request)
    body = await _body(request, ExecuteBody)
    return _json(await _run_to_end(manager, record, body.code, body.timeout))


@OPERATIONS.post(
    _ONE + "/batch", Doc("run a build and an exec shell command", 200, ExecuteResult, BatchBody)
)
async def batch(manager: SessionManager, request: web.Request) -> web.Response:
    record = await _session_of(manager, request)
    body = await _body(request, BatchBody)
    command = BatchCommand(body.build, body.exec)
    return _json(await _run_to_end(manager, record, command, body.timeout))


@OPERATIONS.post(_ONE + "/interrupt", Doc("interrupt the running code", 204))
async def interrupt(manager: SessionManager, request: web.Request) -> web.Response:
    await manager.interrupt(await _session_of(manager, request))
    return web.Response(status=204)


@OPERATIONS.post(_ONE + "/restart", Doc("fresh kernel, files kept", 200, SessionInfo))
async def restart(manager: SessionManager, request: web.Request) -> web.Response:
    record = await _session_of(manager, request)
    await manager.restart(record)
    return web.json_response(_info(manager, await manager.find(keypair_of(request), record.id)))


@OPERATIONS.get(_ONE + "/events", Doc("the session's lifecycle events", 200, EventList))
async def events(manager: SessionManager, request: web.Request) -> web.Response:
    records = await manager.events(await _session_of(manager, request))
    return _json(EventList(events=[event_info(r) for r in records]))


@OPERATIONS.get(
    _ONE + "/files",
    Doc("list a folder of /home/work", 200, FileList, params=({**PATH_QUERY, "required": False},)),
)
async def list_files(manager: SessionManager, request: web.Request) -> web.Response:
    record = await _session_of(manager, request)
    entries = await manager.list_files(record, request.query.get("path", "."))
    return _json(
        FileList(
            files=[FileInfo(name=e.name, kind=e.kind, size=e.size, mtime=e.mtime) for e in entries]
        )
    )


@OPERATIONS.get(
    _ONE + "/files/content",
    Doc("download a file", 200, params=(PATH_QUERY,), raw_response="application/octet-stream"),
)
async def download(manager: SessionManager, request: web.Request) -> web.StreamResponse:
    """The file streamed a chunk at a time (never whole in memory)."""
    record = await _session_of(manager, request)
    with await manager.open_file(record, _path_param(request)) as opened:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "X-Cogbox-Mtime": repr(opened.mtime),  # the CLI's download keeps it
            }
        )
        response.content_length = opened.size
        await response.prepare(request)
        try:
            async for chunk in read_chunks(opened, opened.size):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            log.info("the client of a download from session %s went away", record.id)
        return response


@OPERATIONS.put(
    _ONE + "/files/content",
    Doc("upload a file", 204, params=(PATH_QUERY,), raw_body="application/octet-stream"),
)
async def upload(manager: SessionManager, request: web.Request) -> web.Response:
    """The body streamed to the file a chunk at a time, bounded by the per-file cap and the
    session's quota."""
    record = await _session_of(manager, request)
    path = _path_param(request)
    if request.content_length is not None and request.content_length > UPLOAD_LIMIT_BYTES:
        raise too_large("the upload", UPLOAD_LIMIT_BYTES)
    await manager.upload(record, path, body_chunks(request), UPLOAD_LIMIT_BYTES)
    return web.Response(status=204)


@OPERATIONS.get(_ONE + "/stream", None)  # a WebSocket: named in the document's description
async def stream(manager: SessionManager, request: web.Request) -> web.WebSocketResponse:
    record = await _session_of(manager, request)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    streams = streams_of(request)
    access_key = keypair_of(request).access_key
    async with streams.opened(ws, request, access_key) as sender:
        await _serve_stream(
            ws, sender, manager, record, lambda: streams.still_allowed(access_key, sender)
        )
    return ws


def _path_param(request: web.Request) -> str:
    path = request.query.get("path")
    if not path:
        raise bad_request("give the file's path relative to /home/work as ?path=...")
    return path


async def _body(request: web.Request, model: type[_Model]) -> _Model:
    try:
        return model.model_validate(await json_object(request))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise bad_request(f"invalid request body: {problems}") from exc


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


async def _run_to_end(
    manager: SessionManager,
    record: SessionRecord,
    code: str | BatchCommand,
    timeout: float | None,
) -> ExecuteResult:
    """A whole run's events. No one can answer input() here: it gets an empty line."""
    collected: list[dict[str, Any]] = []
    events = manager.execute(record, code, timeout)
    try:
        async for event in events:
            collected.append(event_to_dict(event))
            if isinstance(event, InputRequest):
                await manager.send_input(record, "")
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    last = collected[-1] if collected else {"kind": "finished", "status": "error"}
    status = f"{last['kind']}/{last.get('status') or last.get('reason', '')}"
    return ExecuteResult(status=status, events=collected)


async def _serve_stream(
    ws: web.WebSocketResponse,
    sender: StreamSender,
    manager: SessionManager,
    record: SessionRecord,
    allowed: Callable[[], Awaitable[bool]],
) -> None:
    """Runs over one WebSocket, one at a time. `allowed` is asked before code or input
    goes to the kernel (the keypair may have been revoked)."""
    run: asyncio.Task[None] | None = None
    going = False

    async def forward(
        code: str | BatchCommand, timeout: float | None, previous: asyncio.Task[None] | None
    ) -> None:
        nonlocal going
        if previous is not None:  # its terminal frame goes out before this run's frames
            with contextlib.suppress(Exception):
                await previous
        terminal: dict[str, Any] | None = None
        try:
            events = manager.execute(record, code, timeout)
            try:
                async for event in events:
                    if isinstance(event, Finished | KernelDied):
                        terminal = _frame(event)  # sent once the run has let go of the kernel
                    else:
                        await sender.send_json(_frame(event))
            finally:
                await events.aclose()  # type: ignore[attr-defined]
        except ServiceError as exc:
            terminal = {"kind": "problem", **exc.body()}
        finally:
            # The run is over before its client can read the terminal frame, so a next run
            # sent the instant it arrives is taken, never refused as "a run is going".
            going = False
        if terminal is not None:
            await sender.send_json(terminal)

    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                frame = parse_json_object(message.data, "the frame")
                if ("code" in frame or "exec" in frame or "input" in frame) and not await allowed():
                    break
                if "code" in frame or "exec" in frame:
                    body: ExecuteBody | BatchBody
                    if "code" in frame:
                        body = ExecuteBody.model_validate(frame)
                        code: str | BatchCommand = body.code
                    else:
                        body = BatchBody.model_validate(frame)
                        code = BatchCommand(body.build, body.exec)
                    if going:
                        raise bad_request("a run is going: wait for its terminal event")
                    going = True
                    run = asyncio.create_task(forward(code, body.timeout, run))
                elif "input" in frame:
                    await manager.send_input(record, str(frame["input"]))
                elif frame.get("interrupt"):
                    await manager.interrupt(record)
                else:
                    raise bad_request(
                        "send {code, timeout}, {exec, build, timeout}, {input} or {interrupt: true}"
                    )
            except ServiceError as exc:
                await sender.send_json({"kind": "problem", **exc.body()})
            except (ValueError, ValidationError) as exc:
                await sender.send_json(
                    {"kind": "problem", **bad_request(f"bad frame: {exc}").body()}
                )
    except StreamClosed:
        pass
    finally:
        if run is not None and not run.done():
            if going:
                run.cancel()  # closing the iterator interrupts the code
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        await sender.flush()


def _frame(event: Event) -> dict[str, Any]:
    return event_to_dict(event)
