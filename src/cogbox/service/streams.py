"""Open WebSocket streams: a bounded send buffer per connection, and revocation.

Every WebSocket the service serves (the native stream, Backend.AI's stream, Jupyter's
channels) sends through a `StreamSender`, never through `ws.send_*` directly:

- At most `buffer_bytes` wait per connection (text frames counted in characters; one
  message bigger than that may wait alone). A sender whose message does not fit waits
  (backpressure: the run's events wait in the agent, whose own queue is bounded too); a
  message marked droppable (Jupyter output on iopub) is dropped instead, and counted, so
  a slow client never stalls the kernel nor costs the service more memory.
- A client that reads nothing for `stall_seconds` while data waits for it is dropped: the
  close frame (code 1008) says why, the service log too, and after a short grace the
  connection is cut even if the client never reads its close frame.

`OpenStreams` knows each keypair's open streams. Once per `interval` (only while streams
are open) it asks the database, in one query, which of their keypairs are still active;
the streams of a removed or deactivated keypair (`cogbox keypair rm`, from another
process) are closed with a frame saying so. Before a stream runs code it checks its
keypair once more (`still_allowed`), so nothing sent after a revocation runs, even within
the interval.

Limits come from the environment: COGBOX_STREAM_BUFFER_BYTES (default 1 MiB) and
COGBOX_STREAM_STALL_SECONDS (default 15).
"""

import asyncio
import collections
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cogbox.service.db import Database

BUFFER_BYTES_ENV = "COGBOX_STREAM_BUFFER_BYTES"
STALL_SECONDS_ENV = "COGBOX_STREAM_STALL_SECONDS"
CLOSE_POLICY = 1008  # RFC 6455 "policy violation": revoked, or a client that stopped reading
REVOKED_REASON = "the keypair was revoked"
REVOCATION_INTERVAL_S = 0.25
_CLOSE_GRACE_S = 10.0  # how long a close frame may wait behind unread data before the cut
_MAX_REASON_BYTES = 123  # what a close frame can carry
log = logging.getLogger(__name__)


class StreamClosed(Exception):
    """The stream was closed (revoked, client too slow, or gone); `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StreamLimits:
    """What one connection may hold waiting for its client, and for how long."""

    buffer_bytes: int = 1 << 20
    stall_seconds: float = 15.0

    @classmethod
    def from_env(cls) -> "StreamLimits":
        default = cls()
        return cls(
            buffer_bytes=int(os.environ.get(BUFFER_BYTES_ENV) or default.buffer_bytes),
            stall_seconds=float(os.environ.get(STALL_SECONDS_ENV) or default.stall_seconds),
        )


class StreamSender:
    """One WebSocket's bounded send buffer and the task that writes it out."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        limits: StreamLimits,
        label: str,
    ) -> None:
        self.ws = ws
        self.limits = limits
        self.label = label  # names the stream in the log: never a token
        self.dropped = 0
        self.closed_reason: str | None = None
        self._transport = request.transport
        self._queue: collections.deque[str | bytes] = collections.deque()
        self._queued = 0
        self._room = asyncio.Event()
        self._ready = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._writer = asyncio.create_task(self._write())

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def has_room(self) -> bool:
        """Whether a droppable message would be queued now (not dropped)."""
        return self._queued < self.limits.buffer_bytes // 2

    async def send(self, data: str | bytes, *, droppable: bool = False) -> bool:
        """Queue `data`; False if it was dropped (droppable, buffer full). Waits for room
        otherwise; raises StreamClosed once the stream is closed."""
        size = len(data)
        if droppable and self._queued and self._queued + size > self.limits.buffer_bytes:
            self.dropped += 1
            return False
        while self._queued and self._queued + size > self.limits.buffer_bytes:
            self._check_open()
            self._room.clear()
            await self._room.wait()
        self._check_open()
        self._queue.append(data)
        self._queued += size
        self._ready.set()
        return True

    async def send_json(self, value: Any) -> None:
        await self.send(json.dumps(value))

    def _check_open(self) -> None:
        if self.closed_reason is not None:
            raise StreamClosed(self.closed_reason)

    async def flush(self) -> None:
        """Wait until everything queued was written (or the stream closed)."""
        while self._queued and self.closed_reason is None:
            self._room.clear()
            await self._room.wait()

    async def _write(self) -> None:
        stall = self.limits.stall_seconds
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            data = self._queue[0]
            try:
                async with asyncio.timeout(stall):
                    if isinstance(data, str):
                        await self.ws.send_str(data)
                    else:
                        await self.ws.send_bytes(data)
            except TimeoutError:
                reason = f"closed: the client read nothing for {stall:g} s with output waiting"
                self.close(CLOSE_POLICY, reason)
                return
            except Exception:  # the client went away (reset, closed): nothing more to send
                self._gone("the client went away")
                return
            self._queue.popleft()
            self._queued -= len(data)
            self._room.set()

    def _gone(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._queue.clear()
        self._queued = 0
        self._room.set()

    def close(self, code: int, reason: str) -> "asyncio.Task[None]":
        """Close with a frame that says why (logged too); a client that does not read it
        within a short grace is cut off. Await the task to wait for the end."""
        if self._closing is None:
            self._gone(reason)
            self._closing = asyncio.create_task(self._close(code, reason))
        return self._closing

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not asyncio.current_task():
            self._writer.cancel()
        if code != 1000:
            log.warning("closed %s: %s", self.label, reason)
        message = reason.encode()[:_MAX_REASON_BYTES]
        try:
            async with asyncio.timeout(_CLOSE_GRACE_S):
                await self.ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if self._transport is not None and not self._transport.is_closing():
                self._transport.abort()

    async def stop(self) -> None:
        """End the writer (the handler is done with the stream); a close under way gets
        its grace to deliver its frame."""
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._closing)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer


class OpenStreams:
    """The open streams of each keypair; closes them when their keypair is revoked."""

    def __init__(self, db: Database, interval: float = REVOCATION_INTERVAL_S) -> None:
        self._db = db
        self._interval = interval
        self._open: dict[str, set[StreamSender]] = {}
        self.limits = StreamLimits.from_env()

    @contextlib.asynccontextmanager
    async def opened(
        self, ws: web.WebSocketResponse, request: web.Request, access_key: str
    ) -> AsyncIterator[StreamSender]:
        """A sender for `ws`, registered under its keypair while the handler runs."""
        sender = StreamSender(ws, request, self.limits, _label(request))
        self._open.setdefault(access_key, set()).add(sender)
        try:
            yield sender
        finally:
            senders = self._open.get(access_key, set())
            senders.discard(sender)
            if not senders:
                self._open.pop(access_key, None)
            await sender.stop()

    async def still_allowed(self, access_key: str, sender: StreamSender) -> bool:
        """Whether the keypair may still run code; if not, its streams close now."""
        allowed = self._db.cached_active(access_key)  # current as of now, or None
        if allowed is None:
            allowed = access_key in await asyncio.to_thread(
                self._db.active_access_keys, {access_key}
            )
        if not allowed:
            self._revoke(access_key)
            return False
        return sender.closed_reason is None

    async def watch(self) -> None:
        """Close the streams of revoked keypairs, checking every interval (forever)."""
        while True:
            await asyncio.sleep(self._interval)
            keys = set(self._open)
            if not keys:
                continue
            try:
                known = {key: self._db.cached_active(key) for key in keys}  # no thread if all
                active = {key for key, on in known.items() if on}
                if None in known.values():
                    active = await asyncio.to_thread(self._db.active_access_keys, keys)
            except Exception:  # a database hiccup: try again next interval
                log.exception("cannot check the keypairs of open streams")
                continue
            for key in keys - active:
                self._revoke(key)

    def _revoke(self, access_key: str) -> None:
        for sender in list(self._open.get(access_key, ())):
            sender.close(CLOSE_POLICY, REVOKED_REASON)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the watcher runs while the app does."""
        watcher = asyncio.create_task(self.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _label(request: web.Request) -> str:
    """The stream for the log: its route's template (a Jupyter token in the path stays
    out) and the session it serves."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "stream"
    session = request.match_info.get("ref") or request.match_info.get("kernel_id") or "?"
    return f"{template} of session {session}"


STREAMS_KEY = web.AppKey("streams", OpenStreams)


def streams_of(request: web.Request) -> OpenStreams:
    return request.app[STREAMS_KEY]
