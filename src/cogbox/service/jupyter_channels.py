"""The Jupyter channels WebSocket: messages both ways between one client's WebSocket and its
relay to the kernel (through the session's agent), with what the open WebSockets have seen
of each kernel (its execution state, last activity and connections).

A client that reads slower than its kernel prints misses output messages (`stream`,
`display_data`, `update_display_data`, `execute_result`), never replies or status
messages, and is told how many on stderr; one that reads nothing for the stall limit, or
whose keypair is revoked, is closed with 1008 and the reason (cogbox.service.streams).

When the session's agent restarts (its relay breaks), the WebSocket stays open: the relay is
opened again on the agent that is back (for up to `REOPEN_SECONDS`), and replies the gap
lost are answered as lost, with a notice on stderr (cogbox.service.jupyter_gap).
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from cogbox.agent.errors import ChannelError
from cogbox.errors import CogboxError
from cogbox.kernel.relay import CLIENT_CHANNELS, KernelRelay
from cogbox.service import jupyter_codec
from cogbox.service.db import SessionRecord
from cogbox.service.jupyter_gap import ReplyLedger
from cogbox.service.sessions import SessionManager
from cogbox.service.streams import OpenStreams, StreamSender

_WATCH_SECONDS = 1.0
# Output a client that reads too slowly may miss (counted, and told on stderr); replies and
# status messages are never dropped (clients wait on them).
_DROPPABLE = {"stream", "display_data", "update_display_data", "execute_result"}
_RUNS_CODE = {"execute_request", "input_reply", "comm_open", "comm_msg"}
# How long a broken relay (its agent restarting) is tried again before the WebSocket closes.
REOPEN_SECONDS = 60.0
_REOPEN_PAUSE_SECONDS = 0.5
log = logging.getLogger(__name__)


@dataclass
class KernelActivity:
    """What the open WebSockets have seen of a kernel."""

    connections: int = 0
    execution_state: str = "idle"
    last_activity: float = 0.0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class _RelayGone(Exception):
    """The relay could not be opened again: close the WebSocket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
        self.ledger = ReplyLedger()
        self._first = kernel  # its opener closes it; this relay closes those it reopened
        self._reopening = asyncio.Lock()

    async def run(self) -> None:
        inbound = asyncio.create_task(self._from_client())
        outbound = asyncio.create_task(self._to_client())
        try:
            done, _ = await asyncio.wait([inbound, outbound], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                gone = task.exception()
                if isinstance(gone, _RelayGone):
                    await self.sender.close(gone.code, gone.reason)
        finally:
            for task in (inbound, outbound):
                task.cancel()
            for task in (inbound, outbound):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.kernel is not self._first:
                with contextlib.suppress(Exception):
                    await self.kernel.close()

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
                relayed = jupyter_codec.outgoing(channel, msg, buffers)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropped a Jupyter message the kernel cannot take: %s", exc)
                continue
            while True:
                kernel = self.kernel
                self.ledger.sent(channel, msg)
                try:
                    await kernel.send(relayed)
                    break
                except (ChannelError, ConnectionError, aiohttp.ClientError):
                    # its agent is restarting: send it on the next relay
                    self.ledger.unsent(msg)
                    await self._reopen(kernel)

    async def _to_client(self) -> None:
        told_dead = False
        while not self.ws.closed:
            kernel = self.kernel
            try:
                batch = await kernel.receive(_WATCH_SECONDS)
            except ChannelError:
                await self._reopen(kernel)
                continue
            for relayed in batch:
                msg = jupyter_codec.incoming(relayed)
                if msg is None:
                    log.warning("dropped a kernel message that is not Jupyter's JSON")
                    continue
                if not self.ledger.received(msg):
                    continue  # the answer to a barrier of the ledger's own
                self._note(msg)
                await self._send(msg)
                await asyncio.sleep(0)  # other tenants' requests between messages
            for owed in self.ledger.settled():
                await self._send(owed)
            if not self.manager.has_kernel(self.record):
                await self.sender.close(1000, "the kernel was shut down")
                return
            alive = self.manager.kernel_alive(self.record)
            if not alive and not told_dead:
                # As Jupyter Server does: the client learns of the death on iopub.
                await self._send(jupyter_codec.status_message("dead"))
                self.seen.execution_state = "dead"
            told_dead = not alive

    async def _reopen(self, broken: KernelRelay) -> None:
        """Open the relay again once the agent is back (both directions notice a break;
        the first reopens, the other finds the new relay). `_RelayGone` if it is not."""
        async with self._reopening:
            if self.kernel is not broken:
                return
            log.info("the relay of kernel %s broke; opening it again", self.record.id)
            with contextlib.suppress(Exception):
                await broken.close()  # closing twice (the first one, by its opener) is harmless
            barriers = self.ledger.gap()
            relay = await self._open_again()
            # Before any of the client's next requests. A relay that broke again meanwhile
            # is noticed by the next call on it; its gap sends all the barriers again.
            with contextlib.suppress(ChannelError, ConnectionError, aiohttp.ClientError):
                for channel, barrier in barriers:
                    await relay.send(jupyter_codec.outgoing(channel, barrier, []))
            self.kernel = relay
            notice = self.ledger.notice(self.seen.execution_state == "busy")
            if notice is not None:
                await self._send(notice)

    async def _open_again(self) -> KernelRelay:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REOPEN_SECONDS
        told_dead = False
        while True:
            if not self.manager.has_kernel(self.record):
                raise _RelayGone(1000, "the kernel was shut down")
            try:
                return await self.manager.open_relay(self.record)
            except (CogboxError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if not told_dead and not self.manager.kernel_alive(self.record):
                    # the agent is back and says so (the state of a channel that is down
                    # stays the last known): as Jupyter Server does, on iopub
                    await self._send(jupyter_codec.status_message("dead"))
                    self.seen.execution_state = "dead"
                    told_dead = True
                if loop.time() > deadline:
                    raise _RelayGone(
                        1011,
                        f"the kernel's agent was not back within {REOPEN_SECONDS:g} s ({exc})",
                    ) from exc
            await asyncio.sleep(_REOPEN_PAUSE_SECONDS)

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
