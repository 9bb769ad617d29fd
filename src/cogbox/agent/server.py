"""`AgentServer`: a LocalAgent behind the authenticated agent channel.

One WebSocket per manager, on a unix socket in the agent's 0700 folder (channel.py), or on
TCP with TLS when the manager is on another machine (tls.py). After
the mutual proof of the agent key, frames are calls answered by id, runs whose events stream
by id (several multiplexed on the one connection), and pushes of kernel states and pools
whenever they change. A manager that goes away (its connection drops) leaves every kernel and
run going: runs keep filling their buffers and the sessions' logs, and the next manager
follows them on. Only an explicit `cancel` interrupts a run, and `shutdown` stops the agent.
"""

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from cogbox.agent import wire
from cogbox.agent.channel import AGENT, CLIENT, HANDSHAKE_TIMEOUT_S, check, nonce, prove
from cogbox.agent.errors import AgentAuthError, ChannelError
from cogbox.agent.local import LocalAgent
from cogbox.agent.relay import MAX_RELAY_FRAME, serve_relay
from cogbox.agent.runs import Run
from cogbox.errors import CogboxError
from cogbox.kernel.events import KernelDied
from cogbox.kernel.files import NewFile, OpenFile
from cogbox.service.agent import BatchCommand, FolderBind, KernelSpec

log = logging.getLogger(__name__)
PUSH_INTERVAL_S = 0.5
MAX_FRAME = 8 << 20  # a file chunk (wire.CHUNK, raw) and its envelope fit
_CLOSE_UNAUTHENTICATED = 4401


class AgentServer:
    """Serves `agent` to managers that prove `key`; `stopped` is set by a `shutdown` call."""

    def __init__(self, agent: LocalAgent, key: bytes) -> None:
        self.agent = agent
        self.key = key
        self.refused = 0  # peers that failed the proof (tests read it)
        self.calls = 0  # calls handled after a proof
        self.stopped = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/agent", self._channel)
        app.router.add_get("/relay", self._relay)
        return app

    async def serve_unix(self, path: Path) -> web.AppRunner:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.UnixSite(runner, str(path))
        await site.start()
        os.chmod(path, 0o600)
        return runner

    async def serve_tls(
        self, host: str, port: int, context: ssl.SSLContext
    ) -> tuple[web.AppRunner, int]:
        """Serve on TCP `host:port` with TLS (tls.server_context); returns the bound port."""
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        return runner, int(runner.addresses[0][1])

    async def _channel(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False)
        if await self._proven(ws, request):
            await _Connection(self, ws).serve()
        return ws

    async def _relay(self, request: web.Request) -> web.WebSocketResponse:
        """One Jupyter client's relay to a kernel (agent/relay.py), after the same proof."""
        ws = web.WebSocketResponse(max_msg_size=MAX_RELAY_FRAME, compress=False)
        if await self._proven(ws, request):
            with contextlib.suppress(ChannelError, ConnectionError):
                await serve_relay(ws, self.agent.open_relay)
        return ws

    async def _proven(self, ws: web.WebSocketResponse, request: web.Request) -> bool:
        await ws.prepare(request)
        try:
            await asyncio.wait_for(self._handshake(ws), HANDSHAKE_TIMEOUT_S)
        except (AgentAuthError, ChannelError, TimeoutError) as exc:
            self.refused += 1
            log.warning("refused a peer on the agent channel: %s", exc)
            await ws.close(code=_CLOSE_UNAUTHENTICATED, message=b"unauthenticated")
            return False
        return True

    async def _handshake(self, ws: web.WebSocketResponse) -> None:
        agent_nonce = nonce()
        await ws.send_str(wire.dumps({"hello": agent_nonce}))
        message = await ws.receive()
        if message.type != WSMsgType.TEXT:
            raise ChannelError("the peer closed before proving the key")
        answer = wire.loads(message.data)
        client_nonce = answer.get("nonce")
        if not isinstance(client_nonce, str) or len(client_nonce) < 32:
            raise AgentAuthError("the peer sent no nonce")
        check(self.key, CLIENT, agent_nonce, client_nonce, answer.get("proof"))
        await ws.send_str(wire.dumps({"proof": prove(self.key, AGENT, agent_nonce, client_nonce)}))


class _Connection:
    """One manager's channel: its calls, the runs it follows, its open files."""

    def __init__(self, server: AgentServer, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.agent = server.agent
        self.ws = ws
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.following: dict[int, Run] = {}
        self.files: dict[int, NewFile | OpenFile] = {}
        self._handles = itertools.count(1)
        self._pushed: dict[str, Any] = {}
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "prepare_image": self._prepare_image,
            "image_policy": self._image_policy,
            "start": self._start,
            "inventory": self._inventory,
            "send_input": self._send_input,
            "interrupt": self._interrupt,
            "restart": self._restart,
            "stop": self._stop,
            "ack": self._ack,
            "create_file": self._create_file,
            "file_write": self._file_write,
            "file_commit": self._file_commit,
            "open_file": self._open_file,
            "open_stored_file": self._open_stored_file,
            "file_read": self._file_read,
            "file_close": self._file_close,
            "list_files": self._list_files,
            "list_stored_files": self._list_stored_files,
            "remove_workdir": self._remove_workdir,
            "shutdown": self._shutdown,
        }

    async def serve(self) -> None:
        pusher = asyncio.create_task(self._push_forever())
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    self._dispatch(wire.loads(message.data))
                elif message.type == WSMsgType.BINARY:  # a call with a file's chunk
                    call, data = wire.binary_in(message.data)
                    if not isinstance(call.get("a"), dict):
                        raise ChannelError("a binary call without arguments")
                    call["a"]["data"] = data
                    self._dispatch(call)
                else:
                    break
        except ChannelError as exc:
            log.warning("the agent channel broke: %s", exc)
        finally:
            pusher.cancel()
            for task in list(self.tasks.values()):
                task.cancel()  # the runs they follow go on: only `cancel` interrupts one
            for opened in self.files.values():
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(opened.close)
            self.files.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op, call, args = message.get("op"), message.get("i"), message.get("a") or {}
        if not isinstance(call, int) or not isinstance(args, dict):
            raise ChannelError("a call without an id or arguments")
        self.server.calls += 1
        if op == "cancel":
            run = self.following.get(int(args.get("of", -1)))
            if run is not None:
                self.agent.abandon(run)
            return
        if op in ("run", "follow"):
            work = self._run(call, op, args)
        elif op in self._ops:
            work = self._answer(call, self._ops[op], {**args, "call": call})
        else:
            work = self._fail(call, ChannelError(f"unknown call {op!r}"))
        task = asyncio.create_task(work)
        self.tasks[call] = task
        task.add_done_callback(lambda _: self.tasks.pop(call, None))

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(wire.dumps(message))

    async def _answer(
        self, call: int, op: Callable[[dict[str, Any]], Awaitable[Any]], args: dict[str, Any]
    ) -> None:
        try:
            result = await op(args)
        except Exception as exc:  # answered, never left waiting
            if not isinstance(exc, CogboxError | OSError):
                log.exception("the agent's %s call failed", getattr(op, "__name__", "?"))
            await self._fail(call, exc)
        else:
            if not isinstance(result, bytes):
                await self._send({"i": call, "r": result})
            elif not self.ws.closed:  # a file's chunk goes raw
                await self.ws.send_bytes(wire.binary_out({"i": call}, result))

    async def _fail(self, call: int, exc: BaseException) -> None:
        if not isinstance(exc, CogboxError):
            exc = CogboxError(f"{type(exc).__name__}: {exc}")
        await self._send({"i": call, "e": wire.error_out(exc)})

    async def _run(self, call: int, op: str, args: dict[str, Any]) -> None:
        """Stream a run's events, numbered: a new one, or one followed from `after`."""
        try:
            session_id = str(args["session_id"])
            if op == "run":
                batch = args.get("batch")
                code: str | BatchCommand = (
                    BatchCommand(batch["build"], batch["exec"]) if batch else str(args["code"])
                )
                run = self.agent.start_run(
                    session_id, code, args.get("timeout"), args.get("run_id")
                )
                after = 0
            else:
                run = self.agent.run(session_id, str(args["run_id"]))
                # A manager that followed this run on a previous agent says how far it got
                # and how much its clients acknowledged (this agent refilled the run anew).
                run.acked = max(run.acked, int(args.get("acked", 0)))
                after = int(args.get("after", run.acked))
            self.following[call] = run
            async for seq, event in run.follow(after):
                if isinstance(event, KernelDied):
                    await self._push()  # the manager sees the kernel's state with its death
                await self._send({"i": call, "s": seq, "v": wire.event_out(event)})
            if op == "run" and (args.get("run_id") is None or args.get("anonymous")):
                run.acked = run.count  # nobody will ask for it again
        except Exception as exc:  # the run's error (e.g. no kernel), or a malformed call
            await self._fail(call, exc)
        finally:
            self.following.pop(call, None)

    async def _push_forever(self) -> None:
        while True:
            await self._push()
            await asyncio.sleep(PUSH_INTERVAL_S)

    async def _push(self) -> None:
        """Kernel states and pools, when they changed since the last push."""
        held = (await self.agent.inventory()).sessions
        states = {sid: asdict(state) for sid, state in held.items()}
        pools = [asdict(pool) for pool in self.agent.pools()]
        current = {"states": states, "pools": pools}
        if current != self._pushed:
            self._pushed = current
            await self._send({"p": "status", **current})

    # ------------------------------------------------------------------ calls

    async def _prepare_image(self, args: dict[str, Any]) -> str:
        call = int(args["call"])

        async def progress(step: str) -> None:
            await self._send({"i": call, "progress": step})

        return await self.agent.prepare_image(str(args["image"]), progress)

    async def _image_policy(self, args: dict[str, Any]) -> Any:
        policy = await self.agent.image_policy(str(args["image"]))
        return policy.model_dump(mode="json")

    async def _start(self, args: dict[str, Any]) -> Any:
        spec = spec_in(args["spec"])
        return {"workdir": await self.agent.start(spec)}

    async def _inventory(self, args: dict[str, Any]) -> Any:
        inventory = await self.agent.inventory()
        return {
            "sessions": {
                sid: {
                    "state": asdict(state),
                    "runs": [
                        {"run_id": run.run_id, "done": run.done, "acked": run.acked}
                        for run in self.agent.runs.of(sid)
                    ],
                }
                for sid, state in inventory.sessions.items()
            }
        }

    async def _send_input(self, args: dict[str, Any]) -> None:
        await self.agent.send_input(str(args["session_id"]), str(args["text"]))

    async def _interrupt(self, args: dict[str, Any]) -> None:
        await self.agent.interrupt(str(args["session_id"]))

    async def _restart(self, args: dict[str, Any]) -> None:
        await self.agent.restart(str(args["session_id"]))
        await self._push()

    async def _stop(self, args: dict[str, Any]) -> None:
        await self.agent.stop(str(args["session_id"]))
        await self._push()

    async def _ack(self, args: dict[str, Any]) -> None:
        await self.agent.ack(str(args["session_id"]), str(args["run_id"]), int(args["n"]))

    def _keep(self, opened: NewFile | OpenFile) -> int:
        handle = next(self._handles)
        self.files[handle] = opened
        return handle

    def _file(self, args: dict[str, Any]) -> NewFile | OpenFile:
        opened = self.files.get(int(args["h"]))
        if opened is None:
            raise CogboxError("no such open file")
        return opened

    async def _create_file(self, args: dict[str, Any]) -> Any:
        new = await self.agent.create_file(str(args["session_id"]), str(args["path"]))
        return {"h": self._keep(new)}

    async def _file_write(self, args: dict[str, Any]) -> Any:
        new = self._file(args)
        assert isinstance(new, NewFile)
        data = args.get("data")
        if not isinstance(data, bytes):
            raise ChannelError("file_write carries its bytes in a binary frame")
        await asyncio.to_thread(new.write, data)
        return new.size

    async def _file_commit(self, args: dict[str, Any]) -> None:
        new = self._file(args)
        assert isinstance(new, NewFile)
        await asyncio.to_thread(new.commit)

    async def _opened(self, opened: OpenFile) -> Any:
        return {"h": self._keep(opened), "size": opened.size, "mtime": opened.mtime}

    async def _open_file(self, args: dict[str, Any]) -> Any:
        opened = await self.agent.open_file(str(args["session_id"]), str(args["path"]))
        return await self._opened(opened)

    async def _open_stored_file(self, args: dict[str, Any]) -> Any:
        opened = await self.agent.open_stored_file(str(args["workdir"]), str(args["path"]))
        return await self._opened(opened)

    async def _file_read(self, args: dict[str, Any]) -> Any:
        opened = self._file(args)
        assert isinstance(opened, OpenFile)
        size = min(int(args["size"]), wire.CHUNK)
        data = await asyncio.to_thread(opened.read_at, int(args["offset"]), size)
        assert isinstance(data, bytes)
        return data

    async def _file_close(self, args: dict[str, Any]) -> None:
        opened = self.files.pop(int(args["h"]), None)
        if opened is not None:
            await asyncio.to_thread(opened.close)

    async def _list_files(self, args: dict[str, Any]) -> Any:
        entries = await self.agent.list_files(str(args["session_id"]), str(args["path"]))
        return [wire.entry_out(entry) for entry in entries]

    async def _list_stored_files(self, args: dict[str, Any]) -> Any:
        entries = await self.agent.list_stored_files(str(args["workdir"]), str(args["path"]))
        return [wire.entry_out(entry) for entry in entries]

    async def _remove_workdir(self, args: dict[str, Any]) -> None:
        await self.agent.remove_workdir(str(args["workdir"]))

    async def _shutdown(self, args: dict[str, Any]) -> None:
        """Stop every kernel, then the agent; answered once the kernels are stopped (the
        manager unmounts storage folders and may remove images next)."""
        await self.agent.close()
        self.server.stopped.set()


def spec_out(spec: KernelSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_in(value: dict[str, Any]) -> KernelSpec:
    fields = dict(value)
    fields["folders"] = [FolderBind(**folder) for folder in fields.get("folders", [])]
    return KernelSpec(**fields)
