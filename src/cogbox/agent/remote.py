"""`RemoteAgent`: the manager's side of the agent channel, implementing the `Agent` protocol.

One WebSocket to the agent carries every call, run and push (states, pools), multiplexed by
id: a call awaits its answer; a run is an async iterator of its events; pushes keep the
caches the protocol's synchronous methods (`state`, `pools`) read. A Jupyter relay is a
WebSocket of its own (agent/relay.py), proven the same way. The
agent must prove the key before anything is sent (channel.py); a peer that cannot is refused
with AgentAuthError and is told nothing.
"""

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from cogbox.agent import wire
from cogbox.agent.channel import AGENT, CLIENT, HANDSHAKE_TIMEOUT_S, check, nonce, prove
from cogbox.agent.errors import AgentAuthError, ChannelError
from cogbox.agent.relay import MAX_RELAY_FRAME, RemoteRelay
from cogbox.agent.server import MAX_FRAME, spec_out
from cogbox.agent.tls import AgentAddress, check_pinned, client_context
from cogbox.jail.policy import Policy
from cogbox.kernel.events import EVENT_COST, Event, Finished, KernelDied, OutputTruncated
from cogbox.kernel.files import FileEntry, NewFile, OpenFile
from cogbox.service.agent import (
    BatchCommand,
    BuildProgress,
    Inventory,
    KernelSpec,
    KernelState,
    PoolState,
)

log = logging.getLogger(__name__)
_CHUNK = wire.CHUNK
STREAM_QUEUE_SIZE = 2 << 20  # characters of a run's events waiting for a slow reader
_NEVER_DROPPED = ("finished", "kernel_died", "input_request", "output_truncated")
_SHUTDOWN_WAIT_S = 120.0  # the agent stops every kernel before it answers
_BACK_WAIT_S = 60.0  # how long a named run's stream waits for a restarted agent to be back
_GONE = object()


class RemoteAgent:
    """An agent process reached at `target`, proving `key` both ways: a unix socket's path,
    or a TCP agent's address (tls.AgentAddress), reached with TLS 1.3 and its certificate
    pinned by fingerprint.

    With `restart` (a blocking function that makes sure the agent runs again, e.g.
    process.ensure_agent) the channel is supervised: when it breaks, the agent is restarted
    if need be, the channel re-opened and `on_reconnect` awaited (the manager re-attaches).
    """

    def __init__(
        self,
        target: Path | AgentAddress,
        key: bytes,
        *,
        shutdown_on_close: bool = True,
        restart: Callable[[], object] | None = None,
    ) -> None:
        self._target = target
        self._key = key
        self._shutdown_on_close = shutdown_on_close
        self._restart = restart
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None
        self._closing = False
        self._recovery: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[object]] = {}
        self._progress: dict[int, BuildProgress] = {}
        self._states: dict[str, KernelState] = {}
        self._pools: list[PoolState] = []
        self._status = asyncio.Event()
        self._told: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, list[int]] = {}  # stream id -> [characters queued, dropped]
        self._acked: dict[tuple[str, str], int] = {}  # (session, run id) -> events acked
        self._back = asyncio.Event()  # set while the channel is up

    # ------------------------------------------------------------------ the channel

    async def open(self) -> None:
        """Connect and check the agent's proof of the key (AgentAuthError if it fails)."""
        self._loop = asyncio.get_running_loop()
        await self._connect()

    async def _connect(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._status.clear()
        self._session = aiohttp.ClientSession(connector=self._connector())
        try:
            self._ws = await self._ws_connect("/agent", MAX_FRAME)
            await asyncio.wait_for(self._handshake(self._ws), HANDSHAKE_TIMEOUT_S)
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read_forever(self._ws))
        self._back.set()
        with contextlib.suppress(TimeoutError):  # the first push: states and pools
            await asyncio.wait_for(self._status.wait(), 5)

    def _connector(self) -> aiohttp.BaseConnector:
        if isinstance(self._target, AgentAddress):
            # the pin, checked by aiohttp right after the TLS handshake, before the request
            pin = aiohttp.Fingerprint(bytes.fromhex(self._target.fingerprint))
            return aiohttp.TCPConnector(ssl=pin)
        return aiohttp.UnixConnector(str(self._target))

    async def _ws_connect(self, path: str, max_size: int) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket to the agent's `path`; over TCP only to the pinned certificate."""
        assert self._session is not None
        target = self._target
        if not isinstance(target, AgentAddress):
            return await self._session.ws_connect(
                f"http://agent{path}", max_msg_size=max_size, compress=0, autoping=True
            )
        try:
            ws = await self._session.ws_connect(
                f"{target.url}{path}",
                max_msg_size=max_size,
                compress=0,
                autoping=True,
                ssl=client_context(),  # TLS 1.3 only; the connector's pin still applies
            )
        except aiohttp.ServerFingerprintMismatch as exc:
            raise AgentAuthError(
                f"the agent at {target.host}:{target.port} showed certificate "
                f"{exc.got.hex()}, not the pinned {target.fingerprint}"
            ) from exc
        try:
            check_pinned(ws.get_extra_info("ssl_object"), target)  # the pin, checked again
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = await ws.receive()
        if hello.type != aiohttp.WSMsgType.TEXT:
            raise AgentAuthError("the agent closed the channel before greeting")
        agent_nonce = wire.loads(hello.data).get("hello")
        if not isinstance(agent_nonce, str) or len(agent_nonce) < 32:
            raise AgentAuthError("the agent sent no nonce")
        client_nonce = nonce()
        proof = prove(self._key, CLIENT, agent_nonce, client_nonce)
        await ws.send_str(wire.dumps({"nonce": client_nonce, "proof": proof}))
        answer = await ws.receive()
        if answer.type != aiohttp.WSMsgType.TEXT:
            raise AgentAuthError("the agent refused this manager's proof of the agent key")
        check(self._key, AGENT, agent_nonce, client_nonce, wire.loads(answer.data).get("proof"))

    async def _read_forever(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._received(wire.loads(message.data), len(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:  # a file's chunk, raw
                    answer, data = wire.binary_in(message.data)
                    self._received({**answer, "r": data}, len(message.data))
                else:
                    break
        except ChannelError:
            log.exception("the agent channel broke")
        finally:
            self._back.clear()
            gone = ChannelError("the connection to the agent was lost")
            for future in self._calls.values():
                if not future.done():
                    future.set_exception(gone)
            for queue in self._streams.values():
                queue.put_nowait(gone)
            self._calls.clear()
            if not self._closing and self._restart is not None:
                log.warning("lost the agent; restarting it or connecting again")
                self._recovery = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        """Get the agent back (started again if it died) and tell the manager."""
        assert self._restart is not None
        while not self._closing:
            try:
                await asyncio.to_thread(self._restart)
                await self._connect()
            except (OSError, aiohttp.ClientError, TimeoutError, ChannelError) as exc:
                log.warning("the agent is not back yet: %s", exc)
                await asyncio.sleep(1)
                continue
            log.info("connected to the agent again")
            if self.on_reconnect is not None:
                await self.on_reconnect()
            return

    def _received(self, message: dict[str, Any], size: int) -> None:
        if message.get("p") == "status":
            self._states = {sid: KernelState(**value) for sid, value in message["states"].items()}
            self._pools = [PoolState(**value) for value in message["pools"]]
            self._status.set()
            return
        call = message.get("i")
        if not isinstance(call, int):
            return
        if "progress" in message and call in self._progress:
            task = asyncio.create_task(_tell(self._progress[call], str(message["progress"])))
            self._told.add(task)
            task.add_done_callback(self._told.discard)
            return
        queue = self._streams.get(call)
        if queue is not None:
            self._queue_event(call, queue, message, size)
            return
        future = self._calls.pop(call, None)
        if future is None or future.done():
            return
        if "e" in message:
            future.set_exception(wire.error_in(message["e"]))
        else:
            future.set_result(message.get("r"))

    def _queue_event(
        self, call: int, queue: "asyncio.Queue[object]", message: dict[str, Any], frame: int
    ) -> None:
        """Queue a run's event for its reader, bounded: past `STREAM_QUEUE_SIZE` characters
        waiting for a slow reader, output is dropped and counted (never input requests or the
        end), and one notice says so before the run's end."""
        kind = (message.get("v") or {}).get("kind")
        size = EVENT_COST + frame  # the frame's length: the event's text and a little
        waiting = self._waiting.setdefault(call, [0, 0])  # characters queued, events dropped
        if kind in ("finished", "kernel_died") and waiting[1]:
            notice = OutputTruncated(
                STREAM_QUEUE_SIZE,
                f"output truncated: {waiting[1]:,} events of this run were dropped because "
                f"more than {STREAM_QUEUE_SIZE:,} characters of them waited for a slow client",
            )
            queue.put_nowait({"i": call, "v": wire.event_out(notice), "n": EVENT_COST})
            waiting[1] = 0
        elif kind not in _NEVER_DROPPED and waiting[0] + size > STREAM_QUEUE_SIZE:
            waiting[1] += 1
            return
        waiting[0] += size
        message["n"] = size
        queue.put_nowait(message)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ChannelError("the connection to the agent was lost")
        await self._ws.send_str(wire.dumps(message))

    async def _call(self, op: str, data: bytes | None = None, **args: Any) -> Any:
        """A call and its answer; `data` (a file's chunk) goes raw in a binary frame."""
        call = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call] = future
        try:
            message = {"i": call, "op": op, "a": args}
            if data is None:
                await self._send(message)
            elif self._ws is None or self._ws.closed:
                raise ChannelError("the connection to the agent was lost")
            else:
                await self._ws.send_bytes(wire.binary_out(message, data))
            return await future
        finally:
            self._calls.pop(call, None)

    def _blocking(self, op: str, data: bytes | None = None, **args: Any) -> Any:
        """A call from one of the manager's worker threads (a file's read or write)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._call(op, data, **args), self._loop)
        return future.result()

    async def _stream(self, op: str, args: dict[str, Any]) -> AsyncIterator[Event]:
        """A run's events. A named run outlives a restart of a supervised agent (its monitor
        kept the kernel and spooled the run): when the channel breaks, the stream waits for
        the agent to be back and follows the run on from the event after the last it got,
        with what the manager acknowledged, so nothing arrives twice or goes missing."""
        call = next(self._ids)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._streams[call] = queue
        finished = False
        run_id = args.get("run_id")
        after = 0  # the number of the next event this stream expects
        try:
            await self._send({"i": call, "op": op, "a": args})
            while True:
                item = await queue.get()
                if isinstance(item, ChannelError) and run_id and self._restart is not None:
                    await self._follow_again(call, str(args["session_id"]), str(run_id), after)
                    continue
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, dict)
                if isinstance(item.get("s"), int):
                    after = item["s"] + 1
                if call in self._waiting:
                    self._waiting[call][0] -= int(item.get("n", 0))
                if "e" in item:
                    raise wire.error_in(item["e"])
                if "v" not in item:
                    continue  # the run's id
                event = wire.event_in(item["v"])
                if isinstance(event, Finished | KernelDied):
                    finished = True
                yield event
                if finished:
                    return
        finally:
            self._streams.pop(call, None)
            self._waiting.pop(call, None)
            if not finished and self._ws is not None and not self._ws.closed:
                with contextlib.suppress(ChannelError, ConnectionError):
                    await self._send({"i": next(self._ids), "op": "cancel", "a": {"of": call}})

    async def _follow_again(self, call: int, session_id: str, run_id: str, after: int) -> None:
        """Follow run `run_id` on the agent that is back, from event `after`, under the same
        call id (ids are never reused, so its events come to the same stream)."""
        try:
            async with asyncio.timeout(_BACK_WAIT_S):
                while self._ws is None or self._ws.closed or not self._back.is_set():
                    if self._closing:
                        raise ChannelError("the connection to the agent was closed")
                    await self._back.wait()
        except TimeoutError:
            raise ChannelError(
                f"the agent was not back within {_BACK_WAIT_S:.0f} s to go on with run {run_id!r}"
            ) from None
        acked = self._acked.get((session_id, run_id), 0)
        log.info("following run %s of %s again from event %d", run_id, session_id, after)
        arguments = {"session_id": session_id, "run_id": run_id, "after": after, "acked": acked}
        await self._send({"i": call, "op": "follow", "a": arguments})

    async def close(self) -> None:
        """Let go of the agent; the one `cogbox serve` started is told to stop (kernels and
        all) unless `shutdown_on_close` is off."""
        self._closing = True
        if self._recovery is not None:
            self._recovery.cancel()
        if self._ws is not None and not self._ws.closed and self._shutdown_on_close:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call("shutdown"), _SHUTDOWN_WAIT_S)
        # The reader goes first: ws.close() waits for the peer's close frame, which a
        # reader still receiving would take from it (close then hung until its timeout).
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # ------------------------------------------------------------------ the Agent protocol

    async def prepare_image(self, image: str, progress: BuildProgress) -> str:
        call = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call] = future
        self._progress[call] = progress
        try:
            await self._send({"i": call, "op": "prepare_image", "a": {"image": image}})
            return str(await future)
        finally:
            self._calls.pop(call, None)
            self._progress.pop(call, None)

    async def memory_limit(self, image: str) -> int:
        return (await self.image_policy(image)).limits.memory_bytes

    async def image_policy(self, image: str) -> Policy:
        return Policy.model_validate(await self._call("image_policy", image=image))

    def pools(self) -> list[PoolState]:
        return list(self._pools)

    async def start(self, spec: KernelSpec) -> str:
        answer = await self._call("start", spec=spec_out(spec))
        self._states[spec.session_id] = KernelState(True)
        return str(answer["workdir"])

    async def inventory(self) -> Inventory:
        answer = await self._call("inventory")
        sessions: dict[str, KernelState] = {}
        for sid, held in answer["sessions"].items():
            sessions[sid] = self._states[sid] = KernelState(**held["state"])
        return Inventory(sessions)

    def execute(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        # Every run is named, so its stream can follow it onto a restarted agent; one the
        # caller did not name is `anonymous`: nobody asks for it once it ended.
        args: dict[str, Any] = {
            "session_id": session_id,
            "timeout": timeout,
            "run_id": run_id or secrets.token_hex(8),
            "anonymous": run_id is None,
        }
        if isinstance(code, BatchCommand):
            args["batch"] = {"build": code.build, "exec": code.exec}
        else:
            args["code"] = code
        return self._stream("run", args)

    def resume(self, session_id: str, run_id: str) -> AsyncIterator[Event]:
        return self._stream("follow", {"session_id": session_id, "run_id": run_id})

    async def ack(self, session_id: str, run_id: str, delivered: int) -> None:
        key = (session_id, run_id)
        self._acked[key] = self._acked.get(key, 0) + delivered
        await self._call("ack", session_id=session_id, run_id=run_id, n=delivered)

    async def send_input(self, session_id: str, text: str) -> None:
        await self._call("send_input", session_id=session_id, text=text)

    async def interrupt(self, session_id: str) -> None:
        await self._call("interrupt", session_id=session_id)

    async def restart(self, session_id: str) -> None:
        await self._call("restart", session_id=session_id)

    async def stop(self, session_id: str) -> None:
        await self._call("stop", session_id=session_id)
        self._states.pop(session_id, None)

    def state(self, session_id: str) -> KernelState:
        state = self._states.get(session_id)
        if state is None:
            return KernelState(False, "stopped", "the kernel is not running")
        return state  # the last one known while the channel is down (calls fail meanwhile)

    async def create_file(self, session_id: str, path: str) -> NewFile:
        answer = await self._call("create_file", session_id=session_id, path=path)
        return _RemoteNewFile(self, int(answer["h"]))

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        answer = await self._call("open_file", session_id=session_id, path=path)
        return _RemoteOpenFile(self, answer)

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]:
        entries = await self._call("list_files", session_id=session_id, path=path)
        return [wire.entry_in(entry) for entry in entries]

    async def open_stored_file(self, workdir: str, path: str) -> OpenFile:
        answer = await self._call("open_stored_file", workdir=workdir, path=path)
        return _RemoteOpenFile(self, answer)

    async def list_stored_files(self, workdir: str, path: str) -> list[FileEntry]:
        entries = await self._call("list_stored_files", workdir=workdir, path=path)
        return [wire.entry_in(entry) for entry in entries]

    async def remove_workdir(self, workdir: str) -> None:
        await self._call("remove_workdir", workdir=workdir)

    async def open_relay(self, session_id: str) -> RemoteRelay:
        """A Jupyter relay to the session's kernel, on a WebSocket of its own."""
        if self._session is None or self._session.closed:
            raise ChannelError("the connection to the agent was lost")
        ws = await self._ws_connect("/relay", MAX_RELAY_FRAME)
        try:
            await asyncio.wait_for(self._handshake(ws), HANDSHAKE_TIMEOUT_S)
            return await RemoteRelay.open(ws, session_id)
        except BaseException:
            await ws.close()
            raise


async def _tell(progress: BuildProgress, step: str) -> None:
    await progress(step)


class _RemoteNewFile(NewFile):
    """A file of a session's /home/work being uploaded through the agent; its methods are
    called from the manager's worker threads (asyncio.to_thread), as a local NewFile's."""

    def __init__(self, agent: RemoteAgent, handle: int) -> None:
        self._agent = agent
        self._handle = handle
        self.size = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), _CHUNK):
            piece = bytes(data[start : start + _CHUNK])
            self.size = int(self._agent._blocking("file_write", piece, h=self._handle))

    def commit(self) -> None:
        self._agent._blocking("file_commit", h=self._handle)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._agent._blocking("file_close", h=self._handle)


class _RemoteOpenFile(OpenFile):
    """A file opened for reading through the agent (`read_at` from worker threads)."""

    def __init__(self, agent: RemoteAgent, answer: dict[str, Any]) -> None:
        self._agent = agent
        self._handle = int(answer["h"])
        self.size = int(answer["size"])
        self.mtime = float(answer["mtime"])
        self._offset = 0
        self._closed = False

    def read(self, size: int = _CHUNK) -> bytes:
        data = self.read_at(self._offset, size)
        self._offset += len(data)
        return data

    def read_at(self, offset: int, size: int = _CHUNK) -> bytes:
        data = self._agent._blocking("file_read", h=self._handle, offset=offset, size=size)
        if not isinstance(data, bytes):
            raise ChannelError("the agent answered a file read without its bytes")
        return data

    def close(self) -> None:
        """Safe from the event loop too: the agent is told without waiting."""
        if self._closed:
            return
        self._closed = True
        loop = self._agent._loop
        if loop is None or loop.is_closed():
            return
        handle = self._handle

        def send() -> None:
            task = loop.create_task(self._agent._call("file_close", h=handle))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

        loop.call_soon_threadsafe(send)
