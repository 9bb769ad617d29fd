"""The monitors' fork server: one process with the imports done, one fork per kernel."""

import json
import time
from pathlib import Path
from typing import cast

from cogbox.images.store import Image
from cogbox.jail.launcher import JailSpec
from cogbox.kernel.monitor import MonitorConfig
from cogbox.kernel.provisioner import _Monitors
from tests.kernel.support import small_policy


def _unstartable(folder: Path) -> MonitorConfig:
    """A config whose jail fails at once (nothing to run): the monitor answers, no runc."""
    folder.mkdir(mode=0o700)
    spec = JailSpec(image=cast(Image, None), policy=small_policy(), argv=[])
    return MonitorConfig(spec=spec, folder=folder, log=folder / "kernel.log", keep=True)


def _answer(monitors: _Monitors, folder: Path) -> dict[str, object]:
    line = monitors.run(_unstartable(folder))
    return dict(json.loads(line))


def test_each_start_gets_its_own_monitor_from_one_fork_server(tmp_path: Path) -> None:
    monitors = _Monitors()
    answers = [_answer(monitors, tmp_path / f"m{n}") for n in range(3)]
    assert monitors._server is not None
    server = monitors._server[0]
    assert [a["ok"] for a in answers] == [False] * 3
    assert all("nothing to run" in str(a["error"]) or "runc" in str(a["error"]) for a in answers)
    assert server.poll() is None  # still serving: the imports were paid once
    monitors._server[1].close()
    server.wait(10)


def test_a_fork_server_that_died_is_replaced_at_the_next_start(tmp_path: Path) -> None:
    monitors = _Monitors()
    _answer(monitors, tmp_path / "first")
    assert monitors._server is not None
    first = monitors._server[0]
    first.kill()
    first.wait(10)
    assert _answer(monitors, tmp_path / "second")["ok"] is False
    assert monitors._server[0].pid != first.pid
    monitors._server[1].close()
    monitors._server[0].wait(10)


def test_the_fork_server_ends_with_its_starter(tmp_path: Path) -> None:
    monitors = _Monitors()
    _answer(monitors, tmp_path / "m")
    assert monitors._server is not None
    process, starter = monitors._server
    starter.close()  # what this process's end does
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode == 0
