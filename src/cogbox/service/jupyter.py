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

The frames are cogbox.service.jupyter_codec's; the relay of one WebSocket, and what it
does with a client that reads too slowly, is cogbox.service.jupyter_channels's.
"""

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cogbox.images.manifest import ImageManifest
from cogbox.images.store import ImageStore
from cogbox.kernel.relay import RECONNECT_MS, KernelRelay
from cogbox.service.auth import keypair_of
from cogbox.service.bodies import json_object
from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError, bad_request, not_found
from cogbox.service.jupyter_channels import KernelActivity, WebSocketRelay
from cogbox.service.sessions import CreateRequest, SessionManager
from cogbox.service.status import ACTIVE
from cogbox.service.streams import streams_of

API_VERSION = "2.14.0"  # the Jupyter Server REST API this surface follows
TOKEN_PREFIX = "/t/"
KERNEL_NAME_PREFIX = "cogbox-"
_ALIASES = {"python3": "python"}  # a notebook's default kernel name -> our image
_DROPPED_ENV = {"KERNEL_WORKING_DIR", "KERNEL_USERNAME"}  # meaningless inside the jail


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


class JupyterGateway:
    """The Jupyter surface's state: open WebSockets and what they saw, per kernel."""

    def __init__(self, manager: SessionManager, store: ImageStore | None = None) -> None:
        self.manager = manager
        self.store = store or ImageStore()
        self._activity: dict[str, KernelActivity] = {}

    def activity(self, kernel_id: str) -> KernelActivity:
        return self._activity.setdefault(kernel_id, KernelActivity())

    def model(self, record: SessionRecord) -> dict[str, Any]:
        """Jupyter Server's kernel model of a session."""
        seen = self._activity.get(record.id) or KernelActivity()
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
                await WebSocketRelay(
                    sender, kernel, record, self.manager, seen, streams, access_key
                ).run()
        finally:
            seen.connections -= 1
            seen.sockets.discard(ws)
            await kernel.close()


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
