"""The monitor's control wire from an asyncio loop (`arequest`), against the monitor's own
server side of the wire (`read_request`, `send_reply`) on a thread."""

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.kernel import control
from cogbox.kernel.control import MonitorGone
from cogbox.kernel.errors import KernelError

Answer = Callable[[dict[str, Any]], tuple[dict[str, Any], bytes]]


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Callable[[Answer], Path]]:
    """A server on a unix socket answering each request with `answer(request)`."""
    servers: list[socket.socket] = []

    def serve(answer: Answer) -> Path:
        path = tmp_path / "control.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()
        servers.append(server)

        def loop() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    header, payload = answer(control.read_request(conn))
                    control.send_reply(conn, header, payload)

        threading.Thread(target=loop, daemon=True).start()
        return path

    yield serve
    for server in servers:
        server.close()


def test_an_async_request_reads_the_same_reply_as_a_blocking_one(
    monitor: Callable[[Answer], Path],
) -> None:
    path = monitor(lambda body: ({"op": body["op"], "since": body.get("since")}, b"x" * 70_000))
    blocking = control.request(path, "spool", since=3)
    awaited = asyncio.run(control.arequest(path, "spool", since=3))
    assert (awaited.header, awaited.payload) == (blocking.header, blocking.payload)
    assert awaited.header["since"] == 3 and len(awaited.payload) == 70_000


def test_an_async_request_names_a_refusal_and_a_missing_monitor(
    monitor: Callable[[Answer], Path], tmp_path: Path
) -> None:
    path = monitor(lambda body: ({"error": f"unknown op {body['op']!r}"}, b""))
    with pytest.raises(KernelError, match="refused 'format_disk': unknown op"):
        asyncio.run(control.arequest(path, "format_disk"))
    with pytest.raises(MonitorGone, match="monitor is gone"):
        asyncio.run(control.arequest(tmp_path / "nobody.sock", "status"))


def test_an_async_request_gives_up_on_a_silent_monitor_by_name(
    monitor: Callable[[Answer], Path],
) -> None:
    path = monitor(lambda body: (time.sleep(1.0), ({}, b""))[1])
    with pytest.raises(KernelError, match=r"did not answer 'mark' in 0\.2 s"):
        asyncio.run(control.arequest(path, "mark", 0.2))


def test_the_loop_runs_other_work_while_a_monitor_is_slow_to_answer(
    monitor: Callable[[Answer], Path],
) -> None:
    """A monitor waiting for a core (the agent runs every session on one loop) must not
    stall the other sessions' runs."""
    path = monitor(lambda body: (time.sleep(0.3), ({"seq": 7}, b""))[1])

    async def both() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        reply = await control.arequest(path, "mark")
        task.cancel()
        return int(reply.header["seq"]), ticks

    seq, ticks = asyncio.run(both())
    assert seq == 7
    assert ticks >= 10  # about 30 in 0.3 s; a blocking request lets none run
