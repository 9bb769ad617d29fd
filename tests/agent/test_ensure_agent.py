"""`ensure_agent` (serve's supervision of its agent) when the agent it replaces lets go of its
lock late: killed, it can still hold the folder's lock when serve sees its channel break."""

import fcntl
import os
import signal
import threading
from pathlib import Path

import pytest

from cogbox.agent import process
from cogbox.agent.channel import AgentPlace

pytestmark = pytest.mark.slow  # a real agent process starts (about a second)


def test_an_agent_that_lets_go_of_its_lock_a_moment_late_is_replaced(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the lock looked held at the one check, so no agent was started, and serve
    # waited START_TIMEOUT_S (120 s) for one that never came (a CI run of the Jupyter
    # agent-restart test lost its WebSocket so).
    monkeypatch.setattr(process, "START_TIMEOUT_S", 30.0)
    place = AgentPlace(folder / "agent")
    place.make()
    dying = os.open(process.lock_file(place), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(dying, fcntl.LOCK_EX)  # the killed agent's, released 0.5 s from now
    threading.Timer(0.5, os.close, (dying,)).start()
    try:
        started = process.ensure_agent(
            place,
            sessions_dir=folder / "sessions",
            logs_dir=folder / "logs",
            vfolders_dir=folder / "vfolders",
            pools={},
        )
        assert started and process.accepting(place.socket)
    finally:
        pid = place.folder / "agent.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
