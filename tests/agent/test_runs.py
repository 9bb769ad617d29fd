"""Runs the agent owns, at the seam (a fake kernel session, no jail): numbered events in a
bounded buffer, streamed over the channel, and a run that outlives its manager's connection
is resumed by the next one from what the first acknowledged, nothing twice, nothing lost."""

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.agent.local import LocalAgent
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.runs import Run
from cogbox.agent.server import AgentServer
from cogbox.kernel.events import EVENT_COST, Event, Finished, OutputTruncated, Stdout

KEY = b"k" * 32


class FakeSession:
    """Prints `ticks` lines, one each `pause` seconds, then finishes (the agent's runs
    stream on its loop; the sockets it is handed lead nowhere and are never read)."""

    def __init__(self, ticks: int, pause: float) -> None:
        self.ticks, self.pause = ticks, pause
        self.interrupted = threading.Event()
        self.exit = None
        self.restart_failure = None
        self.output_limit = 1 << 20
        self.output_tap = None

    async def stream(
        self, channels: Any, request: Any, timeout: float | None
    ) -> AsyncIterator[Event]:
        for i in range(self.ticks):
            await asyncio.sleep(self.pause)
            if self.interrupted.is_set():
                yield Finished("aborted")
                return
            yield Stdout(f"tick {i}\n")
        yield Finished("ok", 1)

    def interrupt(self) -> None:
        self.interrupted.set()

    def connection_info(self) -> dict[str, Any]:
        ports = {f"{name}_port": n for n, name in enumerate(("shell", "iopub", "stdin", "control"))}
        return {"transport": "ipc", "ip": "/nonexistent/cogbox-test", "key": "k", **ports}

    def shutdown(self) -> None:
        pass


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cgr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def served(folder: Path, session: FakeSession) -> AsyncIterator[LocalAgent]:
    agent = LocalAgent(workdirs=folder / "sessions")
    agent._sessions["s"] = session  # type: ignore[assignment]
    runner = await AgentServer(agent, KEY).serve_unix(folder / "agent.sock")
    try:
        yield agent
    finally:
        await runner.cleanup()
        await agent.close()


def test_a_follower_behind_the_buffer_is_told_how_many_events_it_missed() -> None:
    async def scenario() -> list[tuple[int, Event]]:
        run = Run("s", "r", limit=3 * (EVENT_COST + 2))
        for i in range(5):
            run.append(Stdout(f"{i}\n"))
        run.append(Finished("ok"))
        run.finish()
        return [item async for item in run.follow(0)]

    followed = asyncio.run(scenario())
    assert isinstance(followed[0][1], OutputTruncated) and "3 events" in followed[0][1].message
    assert followed[1:] == [(3, Stdout("3\n")), (4, Stdout("4\n")), (5, Finished("ok"))]


def test_a_run_goes_on_without_its_manager_and_the_next_one_gets_the_rest(folder: Path) -> None:
    async def scenario() -> tuple[list[Event], list[Event], list[str]]:
        session = FakeSession(ticks=8, pause=0.05)
        async with served(folder, session) as agent:
            first = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
            await first.open()
            events = first.execute("s", "loop", None, run_id="loop")
            seen = [await events.__anext__() for _ in range(3)]
            await first.ack("s", "loop", len(seen))
            await first._ws.close()  # type: ignore[union-attr]  # the manager is killed
            await asyncio.sleep(0.6)  # the run goes on meanwhile
            second = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
            await second.open()
            rest = [event async for event in second.resume("s", "loop")]
            await second.close()
            with contextlib.suppress(Exception):
                await first.close()
            run = agent.runs.get("s", "loop")
            assert run is not None and run.done
            return seen, rest, [r.run_id for r in agent.runs.of("s")]

    seen, rest, runs = asyncio.run(scenario())
    assert seen + rest == [*(Stdout(f"tick {i}\n") for i in range(8)), Finished("ok", 1)]
    assert runs == ["loop"]


def test_a_cancelled_run_is_interrupted(folder: Path) -> None:
    async def scenario() -> bool:
        session = FakeSession(ticks=100, pause=0.05)
        async with served(folder, session):
            remote = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
            await remote.open()
            events = remote.execute("s", "loop", None)
            await events.__anext__()
            await events.aclose()  # type: ignore[attr-defined]
            deadline = time.monotonic() + 5
            while not session.interrupted.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await remote.close()
            return session.interrupted.is_set()

    assert asyncio.run(scenario())
