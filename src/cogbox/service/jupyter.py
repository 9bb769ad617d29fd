"""Jupyter Server's kernels API on cogbox sessions, so Jupyter's own clients use them.

    GET    /api                                  {"version": ...}
    GET    /api/kernelspecs                      one spec per ready image, named cogbox-<image>
    GET    /api/kernelspecs/{name}               one of them
    GET    /api/kernels                          this keypair's active sessions, as kernels
    POST   /api/kernels                          {"name": "cogbox-cntk"}: 201 + kernel model
    GET    /api/kernels/{id}                     {id, name, last_activity, execution_state,
                                                  connections}
    DELETE /api/kernels/{id}                     204; the session ends (its files too)
    POST   /api/kernels/{id}/interrupt           204
    POST   /api/kernels/{id}/restart             200 + model; variables lost, files kept
    WS     /api/kernels/{id}/channels            Jupyter messages of every channel, as JSON
    WS     /t/{token}/api/kernels/{id}/channels  the same, for clients that send no headers

A kernel is a session: its id is the session's id, so the native and Backend.AI APIs see
it too. Auth is the keypair's Jupyter token (`cogbox.service.auth.jupyter_token`, printed by
`cogbox session token`) as `Authorization: token <T>` or `?token=<T>`; a keypair sees only
its own kernels. jupyter_server's `GatewayKernelClient` (used by nbclient through
`GatewayKernelManager`) opens its WebSocket with no headers at all: give it the token in
the path, `JUPYTER_GATEWAY_WS_URL=ws://HOST:PORT/t/<T>`.

The WebSocket speaks Jupyter Server's default framing: one JSON text frame per message
(`header`, `parent_header`, `metadata`, `content`, `channel`), or the binary frame with
buffer offsets for messages that carry buffers. Each connection gets its own relay to the
kernel through the session's agent (`Agent.open_relay`, cogbox.kernel.relay): the agent holds
the sockets and the kernel's key, signs what goes in and checks what comes out, so neither
this process nor its clients hold a kernel socket or key. A client message without
`channel` goes to shell (as in Jupyter Server), except `input_reply`, which only makes sense
on stdin.

A client that reads slower than its kernel prints misses output messages (`stream`,
`display_data`, `update_display_data`, `execute_result`), never replies or status
messages, and is told how many on stderr; one that reads nothing for the stall limit, or
whose keypair is revoked, is closed with 1008 and the reason (cogbox.service.streams).
"""

import asyncio
import contextlib
import json
import logging
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session as Messages
from jupyter_client.session import json_packer

from cogbox.images.manifest import ImageManifest
from cogbox.images.store import ImageStore
from cogbox.kernel.relay import CLIENT_CHANNELS, RECONNECT_MS, KernelRelay, RelayMessage
from cogbox.service.backendai import keypair_of
from cogbox.service.bodies import json_object, parse_json_object
from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError, bad_request, not_found
from cogbox.service.sessions import ACTIVE, CreateRequest, SessionManager
from cogbox.service.streams import OpenStreams, StreamSender, streams_of

API_VERSION = "2.14.0"  # the Jupyter Server REST API this surface follows
TOKEN_PREFIX = "/t/"
KERNEL_NAME_PREFIX = "cogbox-"
_ALIASES = {"python3": "python"}  # a notebook's default kernel name -> our image
_WATCH_SECONDS = 1.0
_DECODE_MAX_BYTES = 64 << 10  # bigger contents are relayed as they came, never parsed
# Output a client that reads too slowly may miss (counted, and told on stderr); replies and
# status messages are never dropped (clients wait on them).
_DROPPABLE = {"stream", "display_data", "update_display_data", "execute_result"}
_RUNS_CODE = {"execute_request", "input_reply", "comm_open", "comm_msg"}
_DROPPED_ENV = {"KERNEL_WORKING_DIR", "KERNEL_USERNAME"}  # meaningless inside the jail
log = logging.getLogger(__name__)


def kernel_name(image: str) -> str:
    return KERNEL_NAME_PREFIX + image


def image_of(name: str) -> str:
    """The image a kernel name asks for: cogbox-<image>, a bare image name, or python3."""
    name = _ALIASES.get(name, name)
    return name.removeprefix(KERNEL_NAME_PREFIX)


def token_of(request: web.Request) -> str | None:
    """The Jupyter token a request carries: in the path, the Authorization header or ?token."""
    if "token" in request.match_info:
        return request.match_info["token"]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return request.query.get("token")


def is_jupyter_path(path: str) -> bool:
    return path == "/api" or path.startswith(("/api/", TOKEN_PREFIX))


@dataclass
class _KernelActivity:
    """What the open WebSockets have seen of a kernel."""

    connections: int = 0
    execution_state: str = "idle"
    last_activity: float = 0.0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class JupyterGateway:
    """The Jupyter surface's state: open WebSockets and what they saw, per kernel."""

    def __init__(self, manager: SessionManager, store: ImageStore | None = None) -> None:
        self.manager = manager
        self.store = store or ImageStore()
        self._activity: dict[str, _KernelActivity] = {}

    def activity(self, kernel_id: str) -> _KernelActivity:
        return self._activity.setdefault(kernel_id, _KernelActivity())

    def model(self, record: SessionRecord) -> dict[str, Any]:
        """Jupyter Server's kernel model of a session."""
        seen = self._activity.get(record.id) or _KernelActivity()
        if record.status in ("building", "starting"):
            state = "starting"
        elif record.status != "running" or not self.manager.kernel_alive(record):
            state = "dead"
        elif self.manager.is_busy(record):
            state = "busy"
        else:
            state = seen.execution_state
        last = max(
            seen.last_activity,
            self.manager.last_used(record) or 0.0,
            record.status_changed_at,
        )
        return {
            "id": record.id,
            "name": kernel_name(record.image),
            # Exactly this format: jupyter_server's gateway client parses it with strptime.
            "last_activity": datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "execution_state": state,
            "connections": seen.connections,
        }

    def kernelspecs(self) -> dict[str, Any]:
        images = sorted({image.name for image in self.store.images() if image.ready})
        specs = {kernel_name(name): self._spec(name) for name in images}
        default = kernel_name("python") if "python" in images else next(iter(specs), "")
        return {"default": default, "kernelspecs": specs}

    def _spec(self, image_name: str) -> dict[str, Any]:
        image = self.store.find(image_name)
        info = image.info if image is not None else ImageManifest()
        description = info.description or image_name
        return {
            "name": kernel_name(image_name),
            "spec": {
                "argv": [],  # started by the service, never by the client
                "env": {},
                "display_name": f"{description} (cogbox)",
                "language": info.kernel.runtime_type,
                "interrupt_mode": "signal",
                "metadata": {"cogbox": {"image": image_name}},
            },
            "resources": {},
        }

    async def disconnect_all(self) -> None:
        """Close every WebSocket (the service is stopping: it waits for open handlers)."""
        for seen in list(self._activity.values()):
            for ws in list(seen.sockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=1001, message=b"the service is stopping")

    async def disconnect(self, kernel_id: str) -> None:
        """Close the kernel's WebSockets (it was shut down)."""
        seen = self._activity.pop(kernel_id, None)
        for ws in list(seen.sockets if seen else ()):
            with contextlib.suppress(Exception):
                await ws.close(code=1000, message=b"the kernel was shut down")

    async def serve_channels(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: SessionRecord,
        kernel: KernelRelay,
    ) -> None:
        """Relay between an open WebSocket and the session's kernel until either ends."""
        seen = self.activity(record.id)
        seen.connections += 1
        seen.sockets.add(ws)
        streams = streams_of(request)
        access_key = keypair_of(request).access_key
        try:
            async with streams.opened(ws, request, access_key) as sender:
                await _Relay(sender, kernel, record, self, streams, access_key).run()
        finally:
            seen.connections -= 1
            seen.sockets.discard(ws)
            await kernel.close()


class _Relay:
    """Messages both ways between one WebSocket and its relay to the kernel (via the agent)."""

    def __init__(
        self,
        sender: StreamSender,
        kernel: KernelRelay,
        record: SessionRecord,
        gateway: JupyterGateway,
        streams: OpenStreams,
        access_key: str,
    ) -> None:
        self.sender = sender
        self.ws = sender.ws
        self.streams = streams
        self.access_key = access_key
        self.told_dropped = 0
        self.missed_parent: dict[str, Any] | None = None
        self.kernel = kernel
        self.record = record
        self.gateway = gateway
        self.seen = gateway.activity(record.id)

    async def run(self) -> None:
        inbound = asyncio.create_task(self._from_client())
        outbound = asyncio.create_task(self._to_client())
        try:
            await asyncio.wait([inbound, outbound], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (inbound, outbound):
                task.cancel()
            for task in (inbound, outbound):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _from_client(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                decoded = _from_json(message.data)
            elif message.type == WSMsgType.BINARY:
                decoded = _from_binary(message.data)
            else:
                break
            if decoded is None:
                log.warning("dropped a malformed message from a Jupyter client")
                continue
            msg, buffers = decoded
            channel = msg.pop("channel", None) or _default_channel(msg)
            if channel not in CLIENT_CHANNELS:
                continue  # iopub and hb are not the client's to send on
            self._touch()
            kind = msg["header"].get("msg_type")
            if kind in _RUNS_CODE and not await self.streams.still_allowed(
                self.access_key, self.sender
            ):
                break
            try:
                await self.kernel.send(_outgoing(channel, msg, buffers))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped a Jupyter message the kernel cannot take: %s", exc)

    async def _to_client(self) -> None:
        told_dead = False
        while not self.ws.closed:
            for relayed in await self.kernel.receive(_WATCH_SECONDS):
                msg = _incoming(relayed)
                if msg is None:
                    log.warning("dropped a kernel message that is not Jupyter's JSON")
                    continue
                self._note(msg)
                await self._send(msg)
                await asyncio.sleep(0)  # other tenants' requests between messages
            if not self.gateway.manager.has_kernel(self.record):
                await self.sender.close(1000, "the kernel was shut down")
                return
            alive = self.gateway.manager.kernel_alive(self.record)
            if not alive and not told_dead:
                # As Jupyter Server does: the client learns of the death on iopub.
                await self._send(_status_message("dead"))
                self.seen.execution_state = "dead"
            told_dead = not alive

    async def _send(self, msg: dict[str, Any]) -> None:
        """Send `msg`; output the client is too slow for is dropped, and the client is
        told how much on stderr once it catches up (before the next message that gets
        through, in the cell of the output it missed)."""
        droppable = msg["channel"] == "iopub" and msg["msg_type"] in _DROPPABLE
        missed = self.sender.dropped - self.told_dropped
        if missed and (not droppable or self.sender.has_room()):
            parent = self.missed_parent or msg["parent_header"]
            await self.sender.send(_encode(_dropped_notice(missed, parent)))
            self.told_dropped += missed
        if not await self.sender.send(_encode(msg), droppable=droppable):
            self.missed_parent = msg["parent_header"]

    def _note(self, msg: dict[str, Any]) -> None:
        self._touch()
        if (
            msg["channel"] == "iopub"
            and msg["msg_type"] == "status"
            and isinstance(msg["content"], dict)
        ):
            self.seen.execution_state = str(msg["content"].get("execution_state", "idle"))

    def _touch(self) -> None:
        self.seen.last_activity = time.time()
        self.gateway.manager.touch(self.record)


def routes(gateway: JupyterGateway) -> web.RouteTableDef:
    """Jupyter Server's kernels and kernelspecs routes, served by `gateway`."""
    table = web.RouteTableDef()
    manager = gateway.manager

    async def kernel_of(request: web.Request) -> SessionRecord:
        kernel_id = request.match_info["kernel_id"]
        record = await manager.find(keypair_of(request), kernel_id)
        if record.status not in ACTIVE:
            raise not_found(f"kernel {kernel_id} ended ({record.status}: {record.status_info})")
        return record

    @table.get("/api")
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": API_VERSION})

    @table.get("/api/kernelspecs")
    async def kernelspecs(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(gateway.kernelspecs))

    @table.get("/api/kernelspecs/{name}")
    async def kernelspec(request: web.Request) -> web.Response:
        specs = (await asyncio.to_thread(gateway.kernelspecs))["kernelspecs"]
        name = kernel_name(image_of(request.match_info["name"]))
        if name not in specs:
            raise not_found(f"no kernelspec {request.match_info['name']!r}; see /api/kernelspecs")
        return web.json_response(specs[name])

    @table.get("/api/kernels")
    async def list_kernels(request: web.Request) -> web.Response:
        records = await manager.list_sessions(keypair_of(request), ACTIVE)
        return web.json_response([gateway.model(record) for record in records])

    @table.post("/api/kernels")
    async def start(request: web.Request) -> web.Response:
        body = await json_object(request)
        name = body.get("name") or kernel_name("python")
        env = body.get("env") or {}
        if not isinstance(name, str):
            raise bad_request("'name' must be a kernelspec name, e.g. 'cogbox-python'")
        if not isinstance(env, dict):
            raise bad_request("'env' must be an object of strings")
        record, _ = await manager.create(
            keypair_of(request),
            CreateRequest(
                image=image_of(name),
                env={str(k): str(v) for k, v in env.items() if k not in _DROPPED_ENV},
            ),
        )
        response = web.json_response(gateway.model(record), status=201)
        response.headers["Location"] = f"/api/kernels/{record.id}"
        return response

    @table.get("/api/kernels/{kernel_id}")
    async def get(request: web.Request) -> web.Response:
        return web.json_response(gateway.model(await kernel_of(request)))

    @table.delete("/api/kernels/{kernel_id}")
    async def shutdown(request: web.Request) -> web.Response:
        record = await kernel_of(request)
        await manager.destroy(record, message="shut down by its owner (Jupyter API)")
        await gateway.disconnect(record.id)
        return web.Response(status=204)

    @table.post("/api/kernels/{kernel_id}/interrupt")
    async def interrupt(request: web.Request) -> web.Response:
        await manager.interrupt(await kernel_of(request))
        return web.Response(status=204)

    @table.post("/api/kernels/{kernel_id}/restart")
    async def restart(request: web.Request) -> web.Response:
        record = await kernel_of(request)
        await manager.restart(record)
        # Open channels' sockets find the new kernel on their next reconnect attempt (every
        # RECONNECT_MS); a SUB socket misses what is published before it rejoins, so the
        # client hears "restarted" only once they had two attempts (a first cell's output
        # was lost otherwise, about once in four suite runs).
        await asyncio.sleep(2 * RECONNECT_MS / 1000)
        gateway.activity(record.id).execution_state = "idle"
        return web.json_response(gateway.model(await kernel_of(request)))

    async def channels(request: web.Request) -> web.WebSocketResponse:
        record = await kernel_of(request)
        if not manager.has_kernel(record):
            raise ServiceError(409, "conflict", f"kernel {record.id} runs no kernel process")
        kernel = await manager.open_relay(record)  # refused (409) before the upgrade
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 << 20)
        try:
            await ws.prepare(request)
        except BaseException:
            await kernel.close()
            raise
        await gateway.serve_channels(ws, request, record, kernel)
        return ws

    table.get("/api/kernels/{kernel_id}/channels")(channels)
    table.get(TOKEN_PREFIX + "{token}/api/kernels/{kernel_id}/channels")(channels)
    return table


def _default_channel(msg: dict[str, Any]) -> str:
    header = msg.get("header")
    kind = header.get("msg_type") if isinstance(header, dict) else None
    return "stdin" if kind == "input_reply" else "shell"


def _from_json(text: str) -> tuple[dict[str, Any], list[bytes]] | None:
    try:
        msg = parse_json_object(text, "the message")
    except ServiceError:
        return None
    return _checked(msg, [])


def _checked(msg: object, buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]] | None:
    if not isinstance(msg, dict):
        return None
    for key in ("header", "parent_header", "metadata", "content"):
        msg.setdefault(key, {})
        if not isinstance(msg[key], dict):
            return None
    msg.pop("buffers", None)
    return msg, buffers


def _from_binary(data: bytes) -> tuple[dict[str, Any], list[bytes]] | None:
    """Jupyter's legacy binary frame: count, offsets (big-endian uint32), JSON, buffers."""
    try:
        (count,) = struct.unpack("!I", data[:4])
        offsets = list(struct.unpack(f"!{count}I", data[4 : 4 * (count + 1)]))
        offsets.append(len(data))
        parts = [data[offsets[i] : offsets[i + 1]] for i in range(count)]
        msg = parse_json_object(parts[0], "the message")
    except (struct.error, IndexError, ServiceError):
        return None
    return _checked(msg, parts[1:])


def _to_binary(msg: dict[str, Any], buffers: list[bytes]) -> bytes:
    parts = [json.dumps(msg, default=json_default).encode(), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def _encode(msg: dict[str, Any]) -> str | bytes:
    """A kernel message as Jupyter Server's WebSocket frame; a content still packed (big
    output) is spliced in as the JSON it already is."""
    buffers = [bytes(buffer) for buffer in msg.pop("buffers", None) or []]
    content = msg.get("content")
    if isinstance(content, bytes | memoryview):
        rest = {key: value for key, value in msg.items() if key != "content"}
        head = json.dumps(rest, default=json_default)
        text = head[:-1] + ', "content": ' + bytes(content).decode("utf-8", "replace") + "}"
        if not buffers:
            return text
        msg = {**rest, "content": json.loads(text)["content"]}
    if buffers:
        return _to_binary(msg, buffers)
    return json.dumps(msg, default=json_default)


def _outgoing(channel: str, msg: dict[str, Any], buffers: list[bytes]) -> RelayMessage:
    """A client's message as the relay carries it (the agent signs it)."""
    parts = [json_packer(msg[key]) for key in ("header", "parent_header", "metadata", "content")]
    return RelayMessage(channel, parts, buffers)


def _incoming(relayed: RelayMessage) -> dict[str, Any] | None:
    """A kernel's message as this surface handles it: a content bigger than
    `_DECODE_MAX_BYTES` stays packed (a 1 MB output is not parsed per client), smaller ones
    are read (the relay looks at status messages)."""
    header, parent, metadata, content = relayed.parts
    try:
        msg: dict[str, Any] = {
            "header": json.loads(header),
            "parent_header": json.loads(parent),
            "metadata": json.loads(metadata),
            "content": json.loads(content) if len(content) <= _DECODE_MAX_BYTES else content,
        }
    except ValueError:
        return None
    if not all(isinstance(msg[key], dict) for key in ("header", "parent_header", "metadata")):
        return None
    msg["msg_id"] = msg["header"].get("msg_id")
    msg["msg_type"] = msg["header"].get("msg_type")
    msg["channel"] = relayed.channel
    if relayed.buffers:
        msg["buffers"] = relayed.buffers
    return msg


_MESSAGES = Messages(key=b"")  # builds this surface's own messages (clients check no key)


def _dropped_notice(count: int, parent: dict[str, Any]) -> dict[str, Any]:
    text = (
        f"[cogbox: {count} output messages were dropped: this client read slower than the "
        "kernel printed]\n"
    )
    msg = _MESSAGES.msg("stream", {"name": "stderr", "text": text}, parent=parent)
    msg["channel"] = "iopub"
    return msg


def _status_message(state: str) -> dict[str, Any]:
    msg = _MESSAGES.msg("status", {"execution_state": state})
    msg["channel"] = "iopub"
    return msg
