"""Files cross the agent channel as raw chunks in binary frames (wire.binary_out), at most
`wire.CHUNK` bytes each, read and written through the agent's safe helpers (kernel/files.py)."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cogbox.agent import wire
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.server import AgentServer
from cogbox.agent.wire import ChannelError
from cogbox.kernel.files import PathNotFoundError, UnsafePathError
from tests.agent.conftest import OneHomeAgent
from tests.fakes.manager import run

KEY = bytes(range(32))
BODY = os.urandom(2 * wire.CHUNK + 12345)  # three chunks, the last a partial one


@contextlib.asynccontextmanager
async def remote_agent(folder: Path) -> AsyncIterator[RemoteAgent]:
    agent = OneHomeAgent(workdirs=folder / "sessions")
    runner = await AgentServer(agent, KEY).serve_unix(folder / "agent.sock")
    remote = RemoteAgent(folder / "agent.sock", KEY, shutdown_on_close=False)
    try:
        await remote.open()
        yield remote
    finally:
        await remote.close()
        await runner.cleanup()
        await agent.close()


def test_an_upload_and_a_download_cross_in_bounded_raw_chunks(folder: Path) -> None:
    async def body() -> None:
        async with remote_agent(folder) as remote:
            new = await remote.create_file("s1", "sub/big.bin")
            await asyncio.to_thread(new.write, BODY)
            await asyncio.to_thread(new.commit)
            await asyncio.to_thread(new.close)
            opened = await remote.open_stored_file("w1", "sub/big.bin")
            try:
                first = await asyncio.to_thread(opened.read_at, 0, 4 * wire.CHUNK)
                rest = b""
                while piece := await asyncio.to_thread(opened.read):
                    rest += piece
            finally:
                opened.close()
        stored = (folder / "sessions" / "w1" / "home" / "sub" / "big.bin").read_bytes()
        assert (stored == BODY, len(first), first + rest[len(first) :] == BODY) == (
            True,
            wire.CHUNK,  # one frame never carries more than a chunk, whatever was asked
            True,
        )

    run(body)


def test_a_path_out_of_the_work_dir_is_refused_through_the_channel(folder: Path) -> None:
    async def body() -> None:
        async with remote_agent(folder) as remote:
            with pytest.raises(UnsafePathError):
                await remote.open_stored_file("w1", "../../../etc/passwd")

    run(body)


def test_a_missing_file_is_the_same_typed_error_through_the_channel(folder: Path) -> None:
    async def body() -> None:
        async with remote_agent(folder) as remote:
            with pytest.raises(PathNotFoundError, match=r"'gone\.txt' does not exist"):
                await remote.list_stored_files("w1", "gone.txt")

    run(body)


def test_a_binary_frame_is_checked_before_it_is_read() -> None:
    frame = wire.binary_out({"i": 1, "r": None}, b"bytes")
    assert wire.binary_in(frame) == ({"i": 1, "r": None}, b"bytes")
    for junk in (b"", frame[:6], wire.binary_out({"i": 1}, b"x" * (wire.CHUNK + 1))):
        with pytest.raises(ChannelError):
            wire.binary_in(junk)
