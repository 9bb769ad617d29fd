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
import secrets
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, MultipartReader, WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from cogbox.images.paths import WORKDIR
from cogbox.kernel.events import InputRequest
from cogbox.kernel.files import OpenFile
from cogbox.service import session_extras
from cogbox.service.agent import BatchCommand
from cogbox.service.auth import keypair_of
from cogbox.service.backendai_graphql import graphql
from cogbox.service.backendai_runs import QueryRuns
from cogbox.service.backendai_status import STATUS, session_info
from cogbox.service.bodies import CHUNK_BYTES, UPLOAD_LIMIT_BYTES, json_object, parse_json_object
from cogbox.service.console import console_items, exit_code, run_status
from cogbox.service.create_options import parse_create_options
from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.job_views import job_fields
from cogbox.service.sessions import CreateRequest, SessionManager, read_chunks
from cogbox.service.streams import StreamClosed, StreamSender, streams_of

log = logging.getLogger(__name__)
API_VERSION = "v7.20230615"
MAX_DOWNLOAD_FILES = 64


def routes(manager: SessionManager, query_wait: float) -> web.RouteTableDef:
    """The Backend.AI-compatible routes, served by `manager`."""
    table = web.RouteTableDef()
    runs = QueryRuns(manager, query_wait)

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
                "status": STATUS[record.status],
                "servicePorts": [],
                "created": created,
            },
            status=201 if created else 200,
        )

    @table.get("/session/{ref}")
    async def info(request: web.Request) -> web.Response:
        record = await session_of(request)
        return web.json_response(session_info(record))

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
            await graphql(manager, keypair_of(request), body.get("query"), body.get("variables"))
        )

    return table


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
