"""The one relay to a kernel (kernel/relay.py) and its crossing of the agent channel
(agent/relay.py): the agent signs and checks with the kernel's key, the manager's side holds
no kernel socket, path or key. A fake kernel (zmq sockets bound by the test) stands in for
the jailed one.

Attack family: a forged kernel message (a process that reaches a relay socket without the key)."""

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session as Signer
from jupyter_client.session import json_packer

from cogbox.agent.local import LocalAgent
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.server import AgentServer
from cogbox.kernel.errors import KernelError
from cogbox.kernel.relay import (
    CHANNELS,
    KernelChannels,
    RelayError,
    RelayMessage,
    check,
    pack,
    unpack,
)
from tests.fakes.manager import run

KEY = bytes(range(32))
KERNEL_KEY = "the-kernel-key"


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cgr-", dir="/tmp"))  # unix socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakeKernel:
    """A kernel's shell (ROUTER) and iopub (PUB), bound on ipc paths under `folder`: it
    answers every shell request it can verify with an `execute_reply` and a `stream` on
    iopub, both signed with its key."""

    def __init__(self, context: zmq.asyncio.Context, folder: Path) -> None:
        base = str(folder / "k")
        self.info: dict[str, Any] = {"transport": "ipc", "ip": base, "key": KERNEL_KEY}
        self.info |= {f"{name}_port": n for n, name in enumerate(CHANNELS, 1)}
        self.info["signature_scheme"] = "hmac-sha256"
        self.signer = Signer(key=KERNEL_KEY.encode())
        self.shell = context.socket(zmq.ROUTER)
        self.shell.bind(f"ipc://{base}-{self.info['shell_port']}")
        self.iopub = context.socket(zmq.PUB)
        self.iopub.bind(f"ipc://{base}-{self.info['iopub_port']}")
        self.requests: list[dict[str, Any]] = []
        self.shell_replies = True  # False: replies lost (as to a restarted kernel's old pipe)
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            frames = await self.shell.recv_multipart()
            identities, rest = self.signer.feed_identities(frames)
            request = self.signer.deserialize(rest)  # raises if the relay did not sign it
            self.requests.append(request)
            if request["header"]["msg_type"] == "kernel_info_request":  # the relay's nudge
                busy = self.signer.msg("status", {"execution_state": "busy"}, parent=request)
                await self.iopub.send_multipart(self.signer.serialize(busy))
            else:
                text = {"name": "stdout", "text": "hello\n"}
                out = self.signer.msg("stream", text, parent=request["header"])
                await self.iopub.send_multipart(self.signer.serialize(out))
            reply = self.signer.msg("execute_reply", {"status": "ok"}, parent=request["header"])
            if self.shell_replies:
                await self.shell.send_multipart(self.signer.serialize(reply, identities))

    def close(self) -> None:
        self.task.cancel()
        self.shell.close(linger=0)
        self.iopub.close(linger=0)


class RelayingAgent(LocalAgent):
    """A LocalAgent whose one session's kernel is the fake one (its relay is the real one)."""

    def __init__(self, folder: Path, kernel: FakeKernel, context: zmq.asyncio.Context) -> None:
        super().__init__(workdirs=folder / "sessions")
        self.kernel = kernel
        self.context = context

    async def open_relay(self, session_id: str) -> KernelChannels:
        if session_id != "s1":
            raise KernelError(f"no kernel runs for session {session_id}")
        channels = KernelChannels(self.context, self.kernel.info)
        await channels.nudge(5.0)
        return channels


@contextlib.asynccontextmanager
async def relayed(folder: Path) -> AsyncIterator[tuple[RemoteAgent, FakeKernel]]:
    context = zmq.asyncio.Context()
    kernel = FakeKernel(context, folder)
    agent = RelayingAgent(folder, kernel, context)
    server = AgentServer(agent, KEY)
    runner = await server.serve_unix(folder / "agent.sock")
    remote = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
    try:
        await remote.open()
        yield remote, kernel
    finally:
        await remote.close()
        await runner.cleanup()
        await agent.close()
        kernel.close()
        context.destroy(linger=0)


def _request(code: str) -> tuple[dict[str, Any], RelayMessage]:
    """An execute_request as the manager relays it: unsigned JSON parts."""
    msg = Signer(key=b"").msg("execute_request", {"code": code})
    parts = [json_packer(msg[k]) for k in ("header", "parent_header", "metadata", "content")]
    return msg, RelayMessage("shell", parts)


def test_a_relay_frame_round_trips_and_junk_is_refused() -> None:
    message = RelayMessage("iopub", [b"{}", b"{}", b"{}", b'{"a": 1}'], [b"\x00buffer"])
    assert unpack(pack(message)) == message
    for junk in (b"", b"\x00\x00\x00\x09", pack(message)[:9], pack(RelayMessage("hb", []))):
        with pytest.raises(RelayError):
            unpack(junk)


def test_a_forged_kernel_message_fails_the_check() -> None:
    genuine, forger = Signer(key=b"k"), Signer(key=b"other")
    real = genuine.serialize(genuine.msg("status", {"execution_state": "idle"}))
    forged = forger.serialize(forger.msg("status", {"execution_state": "idle"}))
    assert json.loads(check(genuine, real)[1][3]) == {"execution_state": "idle"}
    with pytest.raises(RelayError, match="signature"):
        check(genuine, forged)


def test_the_manager_reaches_the_kernel_only_through_the_agent(folder: Path) -> None:
    async def body() -> None:
        async with relayed(folder) as (remote, kernel):
            relay = await remote.open_relay("s1")
            try:
                request, relayed_request = _request("print('hello')")
                await relay.send(relayed_request)
                got: list[RelayMessage] = []
                while len(got) < 2:
                    got += await relay.receive(5.0)
            finally:
                await relay.close()
            types = sorted(
                (m.channel, json.loads(m.parts[0])["msg_type"]) for m in got
            )  # the nudge's replies stayed in the agent
            assert types == [("iopub", "stream"), ("shell", "execute_reply")]
            assert kernel.requests[-1]["header"]["msg_id"] == request["header"]["msg_id"]
            # Nothing of the kernel's place or key crossed to the manager.
            crossed = b"".join(pack(m) for m in got)
            assert KERNEL_KEY.encode() not in crossed and str(folder).encode() not in crossed
            assert not hasattr(remote, "connection_info")

    run(body)


def test_a_relay_to_a_session_without_a_kernel_is_refused_by_name(folder: Path) -> None:
    async def body() -> None:
        async with relayed(folder) as (remote, _):
            with pytest.raises(KernelError, match="session s2"):
                await remote.open_relay("s2")

    run(body)


def test_a_kernel_message_forged_on_iopub_never_reaches_the_client(folder: Path) -> None:
    async def body() -> None:
        context = zmq.asyncio.Context()
        kernel = FakeKernel(context, folder)
        channels = KernelChannels(context, kernel.info)
        try:
            await channels.nudge(5.0)
            forger = Signer(key=b"another-key")
            forged = forger.msg("stream", {"name": "stdout", "text": "forged\n"})
            await kernel.iopub.send_multipart(forger.serialize(forged))
            real = kernel.signer.msg("stream", {"name": "stdout", "text": "real\n"})
            await kernel.iopub.send_multipart(kernel.signer.serialize(real))
            got: list[RelayMessage] = []
            for _ in range(20):
                got += await channels.receive(0.2)
                if any(b"real" in m.parts[3] for m in got):
                    break
            texts = [json.loads(m.parts[3]).get("text") for m in got if m.channel == "iopub"]
            assert texts == ["real\n"]
        finally:
            await channels.close()
            kernel.close()
            context.destroy(linger=0)

    run(body)


def test_a_relay_peer_without_the_agent_key_reaches_no_kernel(folder: Path) -> None:
    """Attack family: bugs in the service's own API (an unauthenticated relay port)."""

    async def body() -> None:
        async with relayed(folder) as (_, kernel):
            connector = aiohttp.UnixConnector(str(folder / "agent.sock"))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.ws_connect("http://agent/relay") as ws,
            ):
                await ws.receive()  # the agent's hello
                await ws.send_str(json.dumps({"session_id": "s1"}))  # no proof
                closed = await ws.receive()
            assert (closed.type, ws.close_code, kernel.requests) == (
                aiohttp.WSMsgType.CLOSE,
                4401,
                [],
            )

    run(body)


def test_a_nudge_needs_the_kernel_to_answer_on_shell_as_well_as_on_iopub(folder: Path) -> None:
    """A restarted kernel's iopub can be heard while a request's reply is lost (it went to
    the old kernel's dead pipe): status traffic alone proves nothing about shell."""

    async def body() -> tuple[bool, bool]:
        context = zmq.asyncio.Context()
        kernel = FakeKernel(context, folder)
        kernel.shell_replies = False
        channels = KernelChannels(context, kernel.info)
        try:
            mute = await channels.nudge(1.5)
            kernel.shell_replies = True
            return mute, await channels.nudge(5.0)
        finally:
            await channels.close()
            kernel.close()
            context.destroy(linger=0)

    assert run(body) == (False, True)


def test_a_receive_with_messages_waiting_still_lets_the_loop_run(folder: Path) -> None:
    """A kernel that floods keeps its socket always ready: each receive must still give
    the loop a turn, or one session's output would starve every other session's."""

    async def body() -> tuple[int, bool]:
        context = zmq.asyncio.Context()
        kernel = FakeKernel(context, folder)
        channels = KernelChannels(context, kernel.info)
        try:
            await channels.nudge(5.0)
            await channels.receive(0.2)  # the nudge's leftovers
            for n in range(100):
                out = kernel.signer.msg("stream", {"name": "stdout", "text": f"{n}\n"})
                await kernel.iopub.send_multipart(kernel.signer.serialize(out))
            await asyncio.sleep(0.3)  # they wait in the socket now, and the loop knows
            turned = asyncio.Event()
            asyncio.get_running_loop().call_soon(turned.set)
            got = await channels.receive(5.0)
            return len(got), turned.is_set()
        finally:
            await channels.close()
            kernel.close()
            context.destroy(linger=0)

    count, turned = run(body)
    assert turned and count >= 1
