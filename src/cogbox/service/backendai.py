"""Backend.AI's client API, enough for the unmodified `backend.ai` CLI and SDK (API v7).

    GET    /                                  version probe (unsigned)
    POST   /session                           create (or reuse by name): 201 {sessionId, ...}
    GET    /session/{ref}                     information
    PATCH  /session/{ref}                     restart
    DELETE /session/{ref}                     destroy
    POST   /session/{ref}                     execute: {mode: query|continue|input|batch, ...}
    POST   /session/{ref}/interrupt           interrupt
    POST   /session/{ref}/upload              multipart files (field `src`)
    GET    /session/{ref}/download            JSON body {files}: multipart/mixed of tar files
    GET    /session/{ref}/files               JSON body {path}: directory listing
    GET    /stream/session/{ref}/execute      WebSocket run loop
    GET    /session/{ref}/logs                the full console log (cogbox.service.log_routes)
    POST   /admin/gql                         GraphQL subset: `keypair`, `compute_session`,
                                              `compute_session_list`

`{ref}` is a session's id or name. Statuses map to Backend.AI's: pending -> PENDING,
running -> RUNNING, building/starting -> PREPARING, terminated -> TERMINATED, dead/lost/error
-> ERROR, cancelled -> CANCELLED (with status_info). `type: batch` with `startupCommand`
makes a job (cogbox.service.jobs): `result` SUCCESS/FAILURE, its exit status in status_info.
`POST /session` of an image not built yet builds it first and answers when the session runs;
meanwhile the session shows as PREPARING.
"""

import asyncio
import contextlib
import json
import logging
import re
import secrets
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, MultipartReader, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from cogbox.images.paths import WORKDIR
from cogbox.kernel.events import Event, Finished, InputRequest, KernelDied
from cogbox.kernel.files import OpenFile
from cogbox.service import session_extras
from cogbox.service.agent import BatchCommand
from cogbox.service.bodies import CHUNK_BYTES, UPLOAD_LIMIT_BYTES, json_object, parse_json_object
from cogbox.service.console import console_items, exit_code, result_body, run_status
from cogbox.service.create_options import parse_create_options
from cogbox.service.db import KeypairRecord, SessionRecord
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.gql_session import pick, selection_of, session_values, unsupported_query
from cogbox.service.job_views import dependency_list, gql_job_fields, job_fields
from cogbox.service.models import iso
from cogbox.service.sessions import CreateRequest, SessionManager, read_chunks
from cogbox.service.status import ACTIVE, SessionStatus
from cogbox.service.streams import StreamClosed, StreamSender, streams_of
from cogbox.service.vfolder_api import gql_vfolder_list

log = logging.getLogger(__name__)
API_VERSION = "v7.20230615"
MAX_DOWNLOAD_FILES = 64
_STATUS: dict[SessionStatus, str] = {  # cogbox's statuses in Backend.AI's names
    SessionStatus.PENDING: "PENDING",
    SessionStatus.BUILDING: "PREPARING",
    SessionStatus.STARTING: "PREPARING",
    SessionStatus.RUNNING: "RUNNING",
    SessionStatus.DEAD: "ERROR",
    SessionStatus.TERMINATED: "TERMINATED",
    SessionStatus.LOST: "ERROR",
    SessionStatus.ERROR: "ERROR",
    SessionStatus.CANCELLED: "CANCELLED",
}


def routes(manager: SessionManager, query_wait: float) -> web.RouteTableDef:
    """The Backend.AI-compatible routes, served by `manager`."""
    table = web.RouteTableDef()
    runs = _Runs(manager, query_wait)

    async def session_of(request: web.Request) -> SessionRecord:
        return await manager.find(keypair_of(request), request.match_info["ref"])

    @table.get("/")
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"version": API_VERSION, "manager": "cogbox"})

    @table.post("/session")
    async def create(request: web.Request) -> web.Response:
        body = await json_object(request)
        name = body.get("name") or body.get("clientSessionToken")
        if name is not None and not isinstance(name, str):
            raise bad_request("'name' must be a string")
        options = parse_create_options(body)
        mounts, mount_map = _mounts(_object_or_empty(body.get("config"), "config"))
        record, created = await manager.create(
            keypair_of(request),
            CreateRequest(
                image=options.image,
                name=name,
                env=options.env,
                reuse_if_exists=bool(body.get("reuseIfExists", True)),
                memory_bytes=options.memory_bytes,
                cpus=options.cpus,
                bootstrap_script=options.bootstrap_script,
                mounts=mounts,
                mount_map=mount_map,
                **job_fields(body),
            ),
        )
        return web.json_response(
            {
                "sessionId": record.id,
                "sessionName": record.name,
                "status": _STATUS[record.status],
                "servicePorts": [],
                "created": created,
            },
            status=201 if created else 200,
        )

    @table.get("/session/{ref}")
    async def info(request: web.Request) -> web.Response:
        record = await session_of(request)
        return web.json_response(_info(record))

    @table.patch("/session/{ref}")
    async def restart(request: web.Request) -> web.Response:
        await manager.restart(await session_of(request))
        return web.Response(status=204)

    @table.delete("/session/{ref}")
    async def destroy(request: web.Request) -> web.Response:
        record = await session_of(request)
        await manager.destroy(record)
        return web.json_response({"stats": {}})

    @table.post("/session/{ref}/interrupt")
    async def interrupt(request: web.Request) -> web.Response:
        await manager.interrupt(await session_of(request))
        return web.Response(status=204)

    @table.post("/session/{ref}")
    async def execute(request: web.Request) -> web.Response:
        record = await session_of(request)
        body = await json_object(request)
        mode = body.get("mode")
        code = body.get("code", "")
        if not isinstance(code, str):
            raise bad_request("'code' must be a string")
        if mode is None:  # Backend.AI's completion request has no mode
            return web.json_response({"result": {"status": "finished", "completions": []}})
        run_id = body.get("runId") or secrets.token_hex(8)
        if not isinstance(run_id, str):
            raise bad_request("'runId' must be a string")
        if mode in ("query", "batch"):
            what: str | BatchCommand = code
            if mode == "batch":
                what = _batch(body.get("options"))
            result = await runs.start(record, run_id, what)
        elif mode == "continue":
            result = await runs.resume(record, run_id)
        elif mode in ("input", "user-input"):
            result = await runs.resume(record, run_id, answer=code)
        else:
            raise bad_request(
                f"unknown execution mode {mode!r}: use query, continue, input or batch"
            )
        return web.json_response({"result": result})

    @table.post("/session/{ref}/upload")
    async def upload(request: web.Request) -> web.Response:
        """Each part streams to its file in /home/work: one chunk in memory at a time."""
        record = await session_of(request)
        if not request.content_type.startswith("multipart/"):
            raise bad_request(_UPLOAD_HOW)
        try:
            reader = await request.multipart()
        except (ValueError, KeyError) as exc:
            raise bad_request(f"{_UPLOAD_HOW} (the multipart body: {exc})") from exc
        count = 0
        while (part := await _next_part(reader)) is not None:
            if not isinstance(part, BodyPartReader) or part.name != "src":
                continue
            name = _upload_name(part.filename)
            await manager.upload(record, name, _part_chunks(part), UPLOAD_LIMIT_BYTES)
            count += 1
        return web.json_response({"uploaded": count})

    @table.get("/session/{ref}/download")
    async def download(request: web.Request) -> web.StreamResponse:
        """multipart/mixed of one tar file per name, streamed: each file is read a chunk at
        a time, so a name given many times costs one chunk, not its size, each time."""
        record = await session_of(request)
        body = await json_object(request) if request.can_read_body else {}
        names = body.get("files") or request.query.getall("files", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise bad_request("'files' must be a non-empty list of paths in /home/work")
        if len(names) > MAX_DOWNLOAD_FILES:
            raise bad_request(
                f"'files' names {len(names)} files: at most {MAX_DOWNLOAD_FILES} per request"
            )
        opened: dict[str, OpenFile] = {}
        try:
            for name in names:  # all opened first: a missing file is a 404, not a cut stream
                if name not in opened:
                    opened[name] = await manager.open_file(record, _in_work(name))
            boundary = secrets.token_hex(16)
            response = web.StreamResponse(
                headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
            )
            await response.prepare(request)
            try:
                for name in names:
                    await _write_tar_part(response, boundary, name, opened[name])
                await response.write(f"--{boundary}--\r\n".encode())
                await response.write_eof()
            except ConnectionResetError:
                log.info("the client of a download from session %s went away", record.id)
            return response
        finally:
            for handle in opened.values():
                handle.close()

    @table.get("/session/{ref}/files")
    async def list_files(request: web.Request) -> web.Response:
        record = await session_of(request)
        body = await json_object(request) if request.can_read_body else {}
        path = _in_work(str(body.get("path") or request.query.get("path", ".")))
        entries = await manager.list_files(record, path)
        files = [
            {
                "filename": e.name,
                "size": e.size,
                "mode": {"directory": "drwxr-xr-x", "symlink": "lrwxrwxrwx"}.get(
                    e.kind, "-rw-r--r--"
                ),
                "ctime": e.mtime,
                "mtime": e.mtime,
                "atime": e.mtime,
            }
            for e in entries
        ]
        return web.json_response({"files": json.dumps(files), "errors": "", "abspath": path})

    @table.get("/stream/session/{ref}/execute")
    async def stream_execute(request: web.Request) -> web.WebSocketResponse:
        record = await session_of(request)
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        streams = streams_of(request)
        access_key = keypair_of(request).access_key
        async with streams.opened(ws, request, access_key) as sender:
            with contextlib.suppress(StreamClosed):
                await _stream_session(
                    ws, sender, manager, record, lambda: streams.still_allowed(access_key, sender)
                )
            await sender.flush()
            if sender.closed_reason is None:
                await ws.close()
        return ws

    session_extras.add_routes(table, manager, keypair_of)

    @table.post("/admin/gql")
    async def gql(request: web.Request) -> web.Response:
        body = await json_object(request)
        return web.json_response(
            await _graphql(manager, keypair_of(request), body.get("query"), body.get("variables"))
        )

    return table


def keypair_of(request: web.Request) -> KeypairRecord:
    keypair = request.get("keypair")
    assert isinstance(keypair, KeypairRecord), "the auth middleware sets the keypair"
    return keypair


def _in_work(path: str) -> str:
    """A path relative to /home/work (Backend.AI's clients may send it absolute)."""
    if path == WORKDIR or path.startswith(WORKDIR + "/"):
        path = path[len(WORKDIR) :].lstrip("/") or "."
    return path


def _object_or_empty(value: object, name: str) -> dict[str, Any]:
    """An optional object field of a body: `{}` when absent or null, 400 naming it when it
    is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object")
    return value


def _mounts(config: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """`config.mounts` (folder names) and `config.mount_map` (name -> path) of a create."""
    mounts = config.get("mounts") or []
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise bad_request("'config.mounts' must be a list of folder names")
    mount_map = _object_or_empty(config.get("mount_map"), "config.mount_map")
    if not all(isinstance(v, str) for v in mount_map.values()):
        raise bad_request("'config.mount_map' must map folder names to paths")
    return list(mounts), {str(k): v for k, v in mount_map.items()}


def _batch(options: object) -> BatchCommand:
    options = _object_or_empty(options, "options")
    build = options.get("build")
    run = options.get("exec")
    # "*" asks the image for its default; ours: no build step, run main.py.
    build = None if build in (None, "", "*") else str(build)
    run = "python main.py" if run in (None, "", "*") else str(run)
    return BatchCommand(build, run)


_UPLOAD_HOW = "upload files as multipart/form-data with a boundary, each in a part named 'src'"


async def _next_part(reader: MultipartReader) -> object:
    try:
        return await reader.next()
    except (ValueError, HttpProcessingError) as exc:
        raise bad_request(f"{_UPLOAD_HOW}: the multipart body is malformed ({exc})") from exc


def _upload_name(filename: str | None) -> str:
    """The file name of a 'src' part: a path in /home/work without control characters."""
    if not filename:
        raise bad_request("each 'src' part needs a file name")
    # Backend.AI's client (aiohttp) percent-encodes it: "sub/x.txt" arrives as "sub%2Fx.txt".
    # Decoded before the checks below, so an encoded control character or ".." is refused too.
    try:
        filename = unquote(filename, errors="strict")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the file name of a 'src' part is not UTF-8: {filename!r}") from exc
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise bad_request(f"the file name of a 'src' part holds a control character: {filename!r}")
    return _in_work(filename)


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await part.read_chunk(CHUNK_BYTES)
        except (ValueError, HttpProcessingError) as exc:
            raise bad_request(f"a 'src' part is malformed: {exc}") from exc
        if not chunk:
            return
        yield chunk


_TAR_BLOCK = tarfile.BLOCKSIZE


async def _write_tar_part(
    response: web.StreamResponse, boundary: str, name: str, opened: OpenFile
) -> None:
    """One part of the download: a tar archive holding `opened` under its base name."""
    info = tarfile.TarInfo(PurePosixPath(name).name or "file")
    info.size = opened.size
    info.mode = 0o644
    info.mtime = opened.mtime  # the client's tar extraction gives the file this time
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    padding = -opened.size % _TAR_BLOCK
    length = len(header) + opened.size + padding + 2 * _TAR_BLOCK
    await response.write(
        f"--{boundary}\r\nContent-Type: application/x-tar\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    await response.write(header)
    async for chunk in read_chunks(opened, opened.size):
        await response.write(chunk)  # waits while the client is slow: backpressure
    await response.write(bytes(padding + 2 * _TAR_BLOCK) + b"\r\n")


def _info(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "session_id": record.id,
        "name": record.name,
        "image": record.image,
        "status": _STATUS[record.status],
        "status_info": _status_info(record),
        "created_at": iso(record.created_at),
        "terminated_at": iso(record.terminated_at),
        "status_changed": iso(record.status_changed_at),
    }


def _status_info(record: SessionRecord) -> str:
    """cogbox's own state (e.g. "lost") with its reason: Backend.AI has no such statuses."""
    return f"{record.status} ({record.status_info})" if record.status_info else record.status


async def _stream_session(
    ws: web.WebSocketResponse,
    sender: StreamSender,
    manager: SessionManager,
    record: SessionRecord,
    allowed: Callable[[], Awaitable[bool]],
) -> None:
    """The stream's one run: its first frame says what to run."""
    try:
        first = parse_json_object(await ws.receive_str(timeout=60), "the first frame")
        mode = first.get("mode", "query")
        if mode not in ("query", "batch"):
            raise bad_request(f"unknown stream mode {mode!r}: use query or batch")
        code: str | BatchCommand = str(first.get("code", ""))
        if mode == "batch":
            code = _batch(first.get("options"))
        if await allowed():
            await _stream_run(ws, sender, manager, record, code, allowed)
    except ServiceError as exc:
        await sender.send_json(
            {
                "status": "finished",
                "exitCode": 1,
                "console": [["stderr", exc.message + "\n"]],
                "options": {},
                "files": [],
                "error": exc.body(),
            }
        )
    except (ValueError, TypeError):
        await sender.send_json(
            {
                "status": "finished",
                "exitCode": 1,
                "options": {},
                "files": [],
                "console": [["stderr", "the first frame must be JSON {code, mode, options}\n"]],
            }
        )


async def _stream_run(
    ws: web.WebSocketResponse,
    sender: StreamSender,
    manager: SessionManager,
    record: SessionRecord,
    code: str | BatchCommand,
    allowed: Callable[[], Awaitable[bool]],
) -> None:
    """One run over a WebSocket: a frame per event; text frames from the client answer
    input(); the client closing the socket interrupts the run."""

    async def answers() -> None:
        async for message in ws:
            if message.type == WSMsgType.TEXT and await allowed():
                await manager.send_input(record, message.data)

    reader = asyncio.create_task(answers())
    events = manager.execute(record, code)
    try:
        async for event in events:
            frame = {
                "status": run_status(event),
                "console": console_items(event),
                "exitCode": exit_code(event),
                "options": {"is_password": event.password}
                if isinstance(event, InputRequest)
                else {},
                "files": [],
            }
            if ws.closed:
                break
            await sender.send_json(frame)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


@dataclass
class _Run:
    """A query-mode run that outlives the HTTP call that started it (Backend.AI's runId)."""

    events: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    delivered: int = 0
    error: ServiceError | None = None


class _Runs:
    """Query-mode runs by (session, runId): a call returns what happened within `wait`
    seconds ("continued" if the run goes on); `continue` and `input` calls pick it up."""

    def __init__(self, manager: SessionManager, wait: float) -> None:
        self._manager = manager
        self._wait = wait
        self._runs: dict[tuple[str, str], _Run] = {}

    async def start(
        self, record: SessionRecord, run_id: str, code: str | BatchCommand
    ) -> dict[str, Any]:
        key = (record.id, run_id)
        if key in self._runs:
            raise bad_request(f"run {run_id!r} is still going: use mode 'continue'")
        run = _Run()
        self._runs[key] = run
        events = self._manager.execute(record, code, run_id=run_id)
        run.task = asyncio.create_task(self._pump(run, events))
        return await self._collect(record, run, run_id)

    async def resume(
        self, record: SessionRecord, run_id: str, answer: str | None = None
    ) -> dict[str, Any]:
        key = (record.id, run_id)
        run = self._runs.get(key)
        if run is None:  # maybe one a previous run of the service started: the agent kept it
            run = self._runs[key] = _Run()
            run.task = asyncio.create_task(self._pump(run, self._manager.resume(record, run_id)))
        if answer is not None:
            await self._manager.send_input(record, answer)
        return await self._collect(record, run, run_id)

    async def _pump(self, run: _Run, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                run.events.append(event)
                run.changed.set()
        except ServiceError as exc:
            run.error = exc
        finally:
            run.changed.set()

    async def _collect(self, record: SessionRecord, run: _Run, run_id: str) -> dict[str, Any]:
        key = (record.id, run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            fresh = run.events[run.delivered :]
            last = fresh[-1] if fresh else None
            ended = run.task is not None and run.task.done()
            if isinstance(last, Finished | KernelDied | InputRequest) or ended:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            run.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.changed.wait(), remaining)
        fresh = run.events[run.delivered :]
        run.delivered = len(run.events)
        if fresh:  # a restarted service's `continue` picks the run up after these
            await self._manager.ack(record, run_id, len(fresh))
        if run.error is not None and not fresh:
            self._runs.pop(key, None)
            raise run.error
        body = result_body(run_id, fresh)
        if body["status"] in ("finished", "exec-timeout") or (run.task and run.task.done()):
            self._runs.pop(key, None)
            if body["status"] == "continued":
                body["status"] = "finished"
        return body


_WORD = re.compile(r"\w+")


async def _graphql(
    manager: SessionManager, keypair: KeypairRecord, query: object, variables: object
) -> dict[str, Any]:
    """The GraphQL queries the CLI's `ps` and `session info` send; others get a GraphQL
    error."""
    if not isinstance(query, str):
        raise bad_request("'query' must be a GraphQL string")
    if variables is not None and not isinstance(variables, dict):
        raise bad_request("'variables' must be a JSON object")
    variables = variables or {}
    root = _root_field(query)
    if root == "keypair":
        return {"data": {"keypair": _pick(_keypair_fields(keypair), _fields_of(query, "keypair"))}}
    if root == "vfolder_list":
        unsupported = [k for k in ("group_id", "filter", "order") if variables.get(k) is not None]
        if unsupported:
            raise bad_request(
                f"'variables.{unsupported[0]}': cogbox lists a keypair's own folders, "
                "unfiltered, oldest first"
            )
        limit = _count_variable(variables, "limit", 20)
        offset = _count_variable(variables, "offset", 0)
        listing = await gql_vfolder_list(
            manager.vfolders, keypair, _fields_of(query, "items"), limit, offset
        )
        return {"data": {"vfolder_list": listing}}
    if root == "compute_session_list":
        wanted = _fields_of(query, "items")
        status = variables.get("status")
        if status is not None and not isinstance(status, str):
            raise bad_request(
                f"'variables.status' must be a string of statuses like 'RUNNING,PREPARING', "
                f"got {status!r}"
            )
        statuses = (status or "").split(",")
        ours = await manager.list_sessions(keypair)
        items = [
            _pick(_gql_session(r), wanted)
            for r in reversed(ours)
            if not statuses[0] or _STATUS[r.status] in statuses
        ]
        limit = _count_variable(variables, "limit", 20)
        offset = _count_variable(variables, "offset", 0)
        return {
            "data": {
                "compute_session_list": {
                    "items": items[offset : offset + limit],
                    "total_count": len(items),
                }
            }
        }
    if root == "compute_session":
        return {
            "data": {"compute_session": await _compute_session(manager, keypair, query, variables)}
        }
    raise unsupported_query(
        root, ["keypair", "compute_session_list", "compute_session", "vfolder_list"]
    )


async def _compute_session(
    manager: SessionManager, keypair: KeypairRecord, query: str, variables: dict[str, Any]
) -> dict[str, Any] | None:
    """`session info`: one session by id (the client sends only UUIDs); null if not ours."""
    selection = selection_of(query, "compute_session")
    ref = variables.get("id")
    if not isinstance(ref, str):
        raise bad_request("'variables.id' must be the session's id")
    try:
        record = await manager.find(keypair, ref)
    except ServiceError:
        return None
    values = session_values(record, _STATUS[record.status], _status_info(record))
    if record.is_batch:  # a job: its type, result, command and what it depends on
        values.update(gql_job_fields(record), dependencies=await dependency_list(manager, record))
    return pick(values, selection, "compute_session")


def _root_field(query: str) -> str:
    """The first field of `{ field ...}`, after an optional `query`/`mutation` keyword and
    variable list. A scan, not a regex: one with several `\\s*` backtracks for minutes on a
    query of spaces."""
    text = query.lstrip()
    for keyword in ("query", "mutation"):
        if text.startswith(keyword):
            text = text[len(keyword) :].lstrip()
            break
    if text.startswith("("):
        end = text.find(")")
        text = text[end + 1 :].lstrip() if end >= 0 else ""
    if not text.startswith("{"):
        return ""
    match = _WORD.match(text[1:].lstrip())
    return match.group(0) if match else ""


def _count_variable(variables: dict[str, Any], name: str, default: int) -> int:
    value = variables.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"'variables.{name}' must be a non-negative integer, got {value!r}")
    return value


def _fields_of(query: str, block: str) -> list[str]:
    match = re.search(rf"\b{block}\s*\{{([^{{}}]*)\}}", query)
    return match.group(1).split() if match else []


def _pick(values: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    return pick(values, [(name, None) for name in wanted], "compute_session_list")


def _keypair_fields(keypair: KeypairRecord) -> dict[str, Any]:
    return {
        "user_id": keypair.access_key,
        "access_key": keypair.access_key,
        "secret_key": "(hidden)",
        "is_active": keypair.is_active,
        "is_admin": keypair.is_admin,
        "concurrency_limit": keypair.max_sessions,
    }


def _gql_session(record: SessionRecord) -> dict[str, Any]:
    """A `compute_session_list` item: `session info`'s fields, with what `ps` reads as JSON
    given as JSON text and no containers (`ps` lists sessions, not their kernels)."""
    return {
        **session_values(record, _STATUS[record.status], _status_info(record)),
        "occupying_slots": "{}",
        "idle_checks": "{}",
        "containers": [],
        "result": "UNDEFINED" if record.status in ACTIVE else "SUCCESS",
        **gql_job_fields(record),
    }
