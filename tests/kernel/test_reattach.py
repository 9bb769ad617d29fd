"""Kernels outlive their owner: a persisted session is taken back by another process.

The owner is a real process (a small script) killed with SIGKILL; the test process then
re-attaches through `Session.attach(state_dir)` and the kernel's monitor.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.bundle import state_dirs
from cogbox.kernel.errors import KernelError, KernelGone
from cogbox.kernel.events import Finished, Result
from cogbox.kernel.session import Session
from cogbox.kernel.session_state import RUN_FILE, STATE_FILE
from tests.kernel.support import run, stdout_of

ROOT = Path(__file__).resolve().parents[2]
_OWNER = """
import sys, time
from pathlib import Path
from cogbox.jail.policy import parse_policy
from cogbox.kernel.session import start_session

state = Path(sys.argv[1])
policy = parse_policy(sys.argv[2], source="test policy")
session = start_session(sys.argv[3], policy, state_dir=state)
for code in sys.argv[4:-1]:
    events = list(session.execute(code))
    assert events[-1].status == "ok", events
for event in session.execute(sys.argv[-1], run_id="run-1"):
    print(type(event).__name__, flush=True)
time.sleep(600)
"""
_POLICY = "limits:\n  memory: 256m\n  workdir_quota: 64m\n  pids: 64\n"
_TEN_LINES = (
    "import time\nfor i in range(10):\n    print('line', i, flush=True)\n    time.sleep(0.5)"
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    # A failed test must not leave a kernel running: take it back and stop it.
    if (path / STATE_FILE).exists():
        with contextlib.suppress(KernelError):
            Session.attach(path).shutdown()


def start_owner(state_dir: Path, image: Image, *setup: str, run: str) -> subprocess.Popen[str]:
    """The owner process: a persisted session, `setup` runs, then `run` left streaming."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_OWNER), str(state_dir), _POLICY, image.name,
         *setup, run],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def kill_owner_once(owner: subprocess.Popen[str], *, after_events: int) -> None:
    """SIGKILL the owner once it has streamed `after_events` events of its run."""
    assert owner.stdout is not None
    for _ in range(after_events):
        assert owner.stdout.readline(), "the owner ended before its run streamed"
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)


def wait_for_run(state_dir: Path, owner: subprocess.Popen[str], timeout: float = 90.0) -> dict:
    """The persisted state once the owner's run is in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert owner.poll() is None, "the owner ended before its run started"
        try:  # the session's state, and the run in flight kept beside it
            state = json.loads((state_dir / STATE_FILE).read_text())
            state["run"] = json.loads((state_dir / RUN_FILE).read_text())["run"]
        except (OSError, ValueError):
            state = {}
        if state.get("run"):
            return state
        time.sleep(0.05)
    raise AssertionError("the owner's run never started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def wait_until_dead(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.05)


def assert_nothing_left(state: dict, state_dir: Path) -> None:
    info = state["provisioner"]
    _, jails = state_dirs()
    assert not (jails / info["jail_id"]).exists()
    cgroups = Path("/sys/fs/cgroup")
    assert not [
        *cgroups.glob(f"*/cogbox/{info['jail_id']}"),
        *cgroups.glob(f"cogbox/{info['jail_id']}"),
    ]
    assert not alive(info["pid"])
    # The monitor answers the cleanup, then exits: its interpreter may still be ending.
    wait_until_dead(info["monitor_pid"], timeout=10)
    assert not Path(state["runtime_dir"]).exists()
    assert not state_dir.exists()


def test_a_killed_owners_session_is_taken_back_with_its_run_and_state(
    python_image: Image, state_dir: Path
) -> None:
    owner = start_owner(
        state_dir, python_image, "x = 41", "open('/home/work/kept.txt', 'w').write('kept')",
        run=_TEN_LINES,
    )  # fmt: skip
    kill_owner_once(owner, after_events=3)  # mid-run: three lines printed
    state = json.loads((state_dir / STATE_FILE).read_text())
    assert alive(state["provisioner"]["pid"]), "the jail died with its owner"

    session = Session.attach(state_dir)
    assert session.pending_run == "run-1"
    events = list(session.resume_run())
    assert stdout_of(events) == "".join(f"line {i}\n" for i in range(10))
    assert events[-1] == Finished("ok", 3)
    assert session.pending_run is None

    events = run(session, "x + 1")
    assert any(isinstance(e, Result) and e.data["text/plain"] == "42" for e in events)
    assert events[-1] == Finished("ok", 4)
    assert session.download("kept.txt") == b"kept"
    session.shutdown()
    assert_nothing_left(state, state_dir)


def test_a_second_attach_replays_the_same_run_from_its_start(
    python_image: Image, state_dir: Path
) -> None:
    code = "print('a')\nprint('b')\nimport time\ntime.sleep(3)"
    owner = start_owner(state_dir, python_image, run=code)
    wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)
    first = Session.attach(state_dir)
    first.detach()  # gone before it resumed: the run stays pending
    session = Session.attach(state_dir)
    try:
        assert session.pending_run == "run-1"
        events = list(session.resume_run())
        assert stdout_of(events) == "a\nb\n"
        assert isinstance(events[-1], Finished) and events[-1].status == "ok"
        # A re-attached session restarts as any: a fresh kernel, under a new monitor.
        before = session._kernel.provisioner.info() if session._kernel else {}
        session.restart()
        assert stdout_of(run(session, "print(6 * 7)")) == "42\n"
        after = session._kernel.provisioner.info() if session._kernel else {}
        assert after["monitor_pid"] != before["monitor_pid"]
        assert not alive(int(before["monitor_pid"]))
    finally:
        session.shutdown()


def test_a_jail_killed_for_memory_while_nobody_is_attached_is_gone_with_its_reason(
    python_image: Image, state_dir: Path
) -> None:
    code = "import time\ntime.sleep(1.5)\nblocks = [bytearray(1 << 20) for _ in range(1024)]"
    owner = start_owner(state_dir, python_image, run=code)
    state = wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)
    wait_until_dead(state["provisioner"]["pid"])
    started = time.monotonic()
    with pytest.raises(KernelGone) as gone:
        Session.attach(state_dir)
    assert time.monotonic() - started < 15
    assert gone.value.reason == "oom" and gone.value.limit_hit
    assert "out of memory" in gone.value.message
    assert_nothing_left(state, state_dir)


def test_a_jail_whose_init_was_killed_is_gone_and_cleaned_up(
    python_image: Image, state_dir: Path
) -> None:
    owner = start_owner(state_dir, python_image, run="import time\ntime.sleep(300)")
    state = wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)
    os.kill(state["provisioner"]["pid"], signal.SIGKILL)
    wait_until_dead(state["provisioner"]["pid"])
    with pytest.raises(KernelGone) as gone:
        Session.attach(state_dir)
    assert gone.value.reason in ("signaled", "killed") and not gone.value.limit_hit
    assert_nothing_left(state, state_dir)


def test_attach_to_a_folder_without_a_session_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="holds no session"):
        Session.attach(tmp_path)


def test_a_kernel_its_owner_was_still_starting_is_stopped_by_the_next_agent(
    python_image: Image, tmp_path: Path
) -> None:
    """The owner (an agent) is killed after the kernel's jail runs but before the kernel is
    ready and its state saved whole: nobody can attach to that kernel, so the next agent
    stops it from the provisioner info recorded at launch (it used to run on forever under
    its monitor; the agent kill tests left three such pool kernels each)."""
    from cogbox.agent.local import LocalAgent
    from cogbox.kernel.session_state import LAUNCHING_FILE

    states = tmp_path / "kernels"
    state = states / "pool-0123456789abcdef"
    owner = start_owner(state, python_image, run="pass")
    deadline = time.monotonic() + 90
    while not (state / LAUNCHING_FILE).exists():
        assert time.monotonic() < deadline and owner.poll() is None, "the jail never ran"
        time.sleep(0.01)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    (state / STATE_FILE).unlink(missing_ok=True)  # killed in the window, whatever its timing
    info = json.loads((state / LAUNCHING_FILE).read_text())
    assert alive(info["monitor_pid"])
    LocalAgent(states_dir=states)._attach_all()
    wait_until_dead(info["monitor_pid"])
    assert not state.exists()
