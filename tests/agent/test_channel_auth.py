"""The agent channel refuses a peer that cannot prove the agent key, in both directions, and
the verdict is read from the agent's side: nothing was started or run for it.

Attack family: bugs in the service's own API (an unauthenticated control port)."""

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cogbox.agent import wire
from cogbox.agent.channel import AGENT, CLIENT, AgentPlace, nonce, prove
from cogbox.agent.errors import AgentAuthError
from cogbox.agent.local import LocalAgent
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.server import AgentServer

KEY = bytes(range(32))
WRONG = bytes(range(1, 33))


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cga-", dir="/tmp"))  # unix socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def agent_server(folder: Path) -> AsyncIterator[AgentServer]:
    agent = LocalAgent(workdirs=folder / "sessions")
    server = AgentServer(agent, KEY)
    runner = await server.serve_unix(folder / "agent.sock")
    try:
        yield server
    finally:
        await runner.cleanup()
        await agent.close()


async def _raw_peer(folder: Path, first: dict[str, Any] | None, then: dict[str, Any]) -> Any:
    """Connect without the key: send `first` (a proof attempt, or None to skip it), then a
    call; return the close code the agent gave."""
    connector = aiohttp.UnixConnector(str(folder / "agent.sock"))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect("http://agent/agent") as ws,
    ):
        hello = wire.loads((await ws.receive()).data)
        assert "hello" in hello
        if first is not None:
            await ws.send_str(wire.dumps(first(hello["hello"]) if callable(first) else first))
        with contextlib.suppress(ConnectionError):
            await ws.send_str(wire.dumps(then))
        while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            assert "proof" not in wire.loads(message.data)
        return ws.close_code


START = {
    "i": 1,
    "op": "start",
    "a": {"spec": {"session_id": "s", "image": "python", "workdir": "s", "binds": []}},
}


def test_the_right_key_is_served(folder: Path) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        async with agent_server(folder) as server:
            remote = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
            await remote.open()
            inventory = await remote.inventory()
            await remote.close()
            return server.calls, inventory.sessions

    assert asyncio.run(scenario()) == (1, {})


@pytest.mark.parametrize(
    "attempt",
    [
        None,  # no proof at all: a call straight away
        lambda agent_nonce: {"nonce": nonce(), "proof": "0" * 64},
        lambda agent_nonce: {  # the right form, the wrong key
            "nonce": (mine := nonce()),
            "proof": prove(WRONG, CLIENT, agent_nonce, mine),
        },
        lambda agent_nonce: {  # the agent's own proof echoed back (a reflection)
            "nonce": (mine := nonce()),
            "proof": prove(KEY, AGENT, agent_nonce, mine),
        },
        lambda agent_nonce: {  # a proof made for another connection's nonce (a replay)
            "nonce": (mine := nonce()),
            "proof": prove(KEY, CLIENT, nonce(), mine),
        },
    ],
    ids=["no-proof", "garbage", "wrong-key", "reflected", "replayed"],
)
def test_a_peer_without_the_key_gets_nothing(folder: Path, attempt: Any) -> None:
    async def scenario() -> tuple[Any, int, int, dict[str, Any]]:
        async with agent_server(folder) as server:
            code = await _raw_peer(folder, attempt, START)
            held = (await server.agent.inventory()).sessions
            return code, server.refused, server.calls, held

    code, refused, calls, held = asyncio.run(scenario())
    assert (code, refused, calls, held) == (4401, 1, 0, {})


def test_the_manager_refuses_an_agent_with_the_wrong_key(folder: Path) -> None:
    """A fake agent that answers with a proof made with another key: the manager refuses
    it and sends it no call."""
    heard: list[str] = []

    async def fake(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        agent_nonce = nonce()
        await ws.send_str(wire.dumps({"hello": agent_nonce}))
        answer = wire.loads((await ws.receive()).data)
        proof = prove(WRONG, AGENT, agent_nonce, answer["nonce"])
        await ws.send_str(wire.dumps({"proof": proof}))
        async for message in ws:
            heard.append(message.data)
        return ws

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/agent", fake)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(folder / "agent.sock")).start()
        try:
            remote = RemoteAgent(folder / "agent.sock", KEY)
            with pytest.raises(AgentAuthError):
                await remote.open()
            await asyncio.sleep(0.2)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    assert heard == []


def test_the_key_file_is_private(folder: Path) -> None:
    place = AgentPlace(folder / "agent")
    key = place.key()
    assert place.key() == key and len(key) == 32
    assert (place.folder.stat().st_mode & 0o777, place.key_file.stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )
    place.key_file.chmod(0o644)
    with pytest.raises(AgentAuthError, match="readable by others"):
        place.key()
