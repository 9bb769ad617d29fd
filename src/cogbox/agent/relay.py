"""A Jupyter relay across the agent channel: one authenticated WebSocket per relay.

The manager opens `/relay` on the agent, both sides prove the agent key as on `/agent`
(channel.py), the manager names the session (`{"session_id": ...}`) and the agent answers
`{"ok": true}` once its own sockets on the kernel receive (`KernelChannels.nudge`), or
`{"e": error}`. From then on each binary frame is one `RelayMessage` (`kernel.relay.pack`),
both ways. The agent signs and checks (the kernel's key never leaves it); the manager holds no
kernel socket and no key. Bounded both ways: the agent reads the kernel only as fast as the
WebSocket drains, and the manager's reader holds at most `QUEUE_FRAMES` frames.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web

from cogbox.agent import wire
from cogbox.agent.errors import ChannelError
from cogbox.errors import CogboxError
from cogbox.kernel.relay import KernelRelay, RelayError, RelayMessage, pack, unpack

MAX_RELAY_FRAME = 65 << 20  # a Jupyter message of 64 MiB (the surface's own limit) and its frame
QUEUE_FRAMES = 16
_WATCH_SECONDS = 1.0
log = logging.getLogger(__name__)

OpenRelay = Callable[[str], Awaitable[KernelRelay]]


async def serve_relay(ws: web.WebSocketResponse, open_relay: OpenRelay) -> None:
    """The agent's side, after the proof: name, open, then frames both ways until either
    side ends."""
    first = await ws.receive()
    if first.type != WSMsgType.TEXT:
        return
    session_id = wire.loads(first.data).get("session_id")
    try:
        if not isinstance(session_id, str):
            raise ChannelError("a relay that names no session")
        relay = await open_relay(session_id)
    except CogboxError as exc:
        await ws.send_str(wire.dumps({"e": wire.error_out(exc)}))
        return
    try:
        await ws.send_str(wire.dumps({"ok": True}))
        inbound = asyncio.create_task(_to_kernel(ws, relay))
        outbound = asyncio.create_task(_from_kernel(ws, relay))
        await asyncio.wait([inbound, outbound], return_when=asyncio.FIRST_COMPLETED)
        for task in (inbound, outbound):
            task.cancel()
        for task in (inbound, outbound):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await relay.close()


async def _to_kernel(ws: web.WebSocketResponse, relay: KernelRelay) -> None:
    async for message in ws:
        if message.type != WSMsgType.BINARY:
            break
        try:
            await relay.send(unpack(message.data))
        except RelayError as exc:
            log.warning("dropped a relayed message: %s", exc)


async def _from_kernel(ws: web.WebSocketResponse, relay: KernelRelay) -> None:
    while not ws.closed:
        for message in await relay.receive(_WATCH_SECONDS):
            await ws.send_bytes(pack(message))  # waits while the manager is slow to read


class RemoteRelay:
    """The manager's side: a `KernelRelay` whose kernel is behind the agent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._frames: asyncio.Queue[RelayMessage | None] = asyncio.Queue(QUEUE_FRAMES)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> "RemoteRelay":
        """Name the session on a proven `ws`; the agent's error (e.g. no kernel) is raised."""
        await ws.send_str(wire.dumps({"session_id": session_id}))
        answer = await ws.receive()
        if answer.type != aiohttp.WSMsgType.TEXT:
            raise ChannelError("the agent closed the relay before it opened")
        value = wire.loads(answer.data)
        if "e" in value:
            raise wire.error_in(value["e"])
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    break
                try:
                    await self._frames.put(unpack(message.data))  # bounded: the agent waits
                except RelayError as exc:
                    log.warning("dropped a relayed message: %s", exc)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self._frames.put_nowait(None)

    async def send(self, message: RelayMessage) -> None:
        if self._ws.closed:
            raise ChannelError("the relay to the agent was closed")
        await self._ws.send_bytes(pack(message))

    async def receive(self, timeout: float) -> list[RelayMessage]:
        try:
            first = await asyncio.wait_for(self._frames.get(), timeout)
        except TimeoutError:
            if self._reader.done():
                raise ChannelError("the relay to the agent was closed") from None
            return []
        batch: list[RelayMessage] = []
        item: RelayMessage | None = first
        while item is not None:
            batch.append(item)
            if self._frames.empty():
                return batch
            item = self._frames.get_nowait()
        if batch:
            self._frames.put_nowait(None)  # the end, after this batch
            return batch
        raise ChannelError("the relay to the agent was closed")

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
