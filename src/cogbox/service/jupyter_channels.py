"""The Jupyter channels WebSocket: messages both ways between one client's WebSocket and its
relay to the kernel (through the session's agent), with what the open WebSockets have seen
of each kernel (its execution state, last activity and connections).

A client that reads slower than its kernel prints misses output messages (`stream`,
`display_data`, `update_display_data`, `execute_result`), never replies or status
messages, and is told how many on stderr; one that reads nothing for the stall limit, or
whose keypair is revoked, is closed with 1008 and the reason (cogbox.service.streams).
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from cogbox.kernel.relay import CLIENT_CHANNELS, KernelRelay
from cogbox.service import jupyter_codec
from cogbox.service.db import SessionRecord
from cogbox.service.sessions import SessionManager
from cogbox.service.streams import OpenStreams, StreamSender

_WATCH_SECONDS = 1.0
# Output a client that reads too slowly may miss (counted, and told on stderr); replies and
# status messages are never dropped (clients wait on them).
_DROPPABLE = {"stream", "display_data", "update_display_data", "execute_result"}
_RUNS_CODE = {"execute_request", "input_reply", "comm_open", "comm_msg"}
log = logging.getLogger(__name__)


@dataclass
class KernelActivity:
    """What the open WebSockets have seen of a kernel."""

    connections: int = 0
    execution_state: str = "idle"
    last_activity: float = 0.0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class WebSocketRelay:
    """Messages both ways between one WebSocket and its relay to the kernel (via the agent)."""

    def __init__(
        self,
        sender: StreamSender,
        kernel: KernelRelay,
        record: SessionRecord,
        manager: SessionManager,
        seen: KernelActivity,
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
        self.manager = manager
        self.seen = seen

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
                decoded = jupyter_codec.from_json(message.data)
            elif message.type == WSMsgType.BINARY:
                decoded = jupyter_codec.from_binary(message.data)
            else:
                break
            if decoded is None:
                log.warning("dropped a malformed message from a Jupyter client")
                continue
            msg, buffers = decoded
            channel = msg.pop("channel", None) or jupyter_codec.default_channel(msg)
            if channel not in CLIENT_CHANNELS:
                continue  # iopub and hb are not the client's to send on
            self._touch()
            kind = msg["header"].get("msg_type")
            if kind in _RUNS_CODE and not await self.streams.still_allowed(
                self.access_key, self.sender
            ):
                break
            try:
                await self.kernel.send(jupyter_codec.outgoing(channel, msg, buffers))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped a Jupyter message the kernel cannot take: %s", exc)

    async def _to_client(self) -> None:
        told_dead = False
        while not self.ws.closed:
            for relayed in await self.kernel.receive(_WATCH_SECONDS):
                msg = jupyter_codec.incoming(relayed)
                if msg is None:
                    log.warning("dropped a kernel message that is not Jupyter's JSON")
                    continue
                self._note(msg)
                await self._send(msg)
                await asyncio.sleep(0)  # other tenants' requests between messages
            if not self.manager.has_kernel(self.record):
                await self.sender.close(1000, "the kernel was shut down")
                return
            alive = self.manager.kernel_alive(self.record)
            if not alive and not told_dead:
                # As Jupyter Server does: the client learns of the death on iopub.
                await self._send(jupyter_codec.status_message("dead"))
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
            await self.sender.send(
                jupyter_codec.encode(jupyter_codec.dropped_notice(missed, parent))
            )
            self.told_dropped += missed
        if not await self.sender.send(jupyter_codec.encode(msg), droppable=droppable):
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
        self.manager.touch(self.record)
