"""A run taken back by another process keeps what its first owner promised (issue 9,
"nothing is silently lost"): its time limit still ends it at the original deadline, and an
`input()` it waits on is asked again and can be answered.

The owner is a real process killed with SIGKILL mid-run (as in test_reattach.py); the test
process re-attaches through `Session.attach` and resumes the run.
"""

import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.kernel.events import Event, Finished, InputRequest, KernelDied, OutputTruncated
from cogbox.kernel.session import Session
from tests.kernel.support import stdout_of
from tests.kernel.test_reattach import _POLICY, ROOT, kill_owner_once, wait_for_run

_OWNER = """
import sys, time
from pathlib import Path
from cogbox.jail.policy import parse_policy
from cogbox.kernel.session import start_session

state, policy, image, timeout, code = sys.argv[1:]
session = start_session(image, parse_policy(policy, source="test policy"), state_dir=Path(state))
limit = float(timeout) if timeout else None
for event in session.execute(code, timeout=limit, run_id="run-1"):
    print(type(event).__name__, flush=True)
time.sleep(600)
"""
_END = (Finished, KernelDied)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    if path.exists():  # a failed test must not leave a kernel running
        try:
            session = Session.attach(path)
        except Exception:
            return
        session.shutdown()


def start_owner(
    state_dir: Path, image: Image, code: str, timeout: float | None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_OWNER), str(state_dir), _POLICY, image.name,
         "" if timeout is None else str(timeout), code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


class Resumed:
    """The resumed run's events, consumed in a thread (the old code never ends such a run:
    the test must not hang with it)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: queue.Queue[Event] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for event in self.session.resume_run():
            self.events.put(event)

    def until(self, kind: type | tuple[type, ...], timeout: float) -> list[Event]:
        """The events up to and with the first of `kind`; fails after `timeout` seconds
        (and interrupts the run so that the session can be shut down)."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(event)
            if isinstance(event, _END):
                self.join()  # until the run has let go of the session
            if isinstance(event, kind):
                return seen
        self.stop()
        raise AssertionError(f"no {kind} within {timeout} s; the run sent {seen}")

    def join(self) -> None:
        """Wait for the resumed run to let go of the session (after its last event)."""
        self._thread.join(15)

    def stop(self) -> None:
        self.session.interrupt()
        self._thread.join(15)


def test_the_time_limit_of_a_resumed_run_ends_it_at_the_original_deadline(
    python_image: Image, state_dir: Path
) -> None:
    owner = start_owner(state_dir, python_image, "while True:\n    pass", timeout=4)
    wait_for_run(state_dir, owner)
    started = time.time()  # the run began a little before: its deadline is before started + 4
    kill_owner_once(owner, after_events=0)

    session = Session.attach(state_dir)
    resumed = Resumed(session)
    events = resumed.until(_END, timeout=20)
    ended = time.time()
    try:
        last = events[-1]
        assert isinstance(last, Finished) and last.status == "timeout", events
        assert "time limit of 4 s" in last.message
        assert ended - started < 4 + 3  # at its deadline, not whenever someone noticed
        assert stdout_of(list(session.execute("print('alive')"))) == "alive\n"
    finally:
        session.shutdown()


def test_a_deadline_passed_while_nobody_was_attached_ends_the_run_on_resume(
    python_image: Image, state_dir: Path
) -> None:
    owner = start_owner(state_dir, python_image, "while True:\n    pass", timeout=1)
    wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)
    time.sleep(2)  # past its deadline, and nobody is there to interrupt it

    session = Session.attach(state_dir)
    try:
        events = Resumed(session).until(_END, timeout=15)
        last = events[-1]
        assert isinstance(last, Finished) and last.status == "timeout", events
    finally:
        session.shutdown()


def test_an_input_the_resumed_run_waits_on_is_asked_again_and_answered(
    python_image: Image, state_dir: Path
) -> None:
    code = "print('before')\nname = input('name? ')\nprint('hi', name)"
    owner = start_owner(state_dir, python_image, code, timeout=None)
    assert owner.stdout is not None
    assert [owner.stdout.readline() for _ in range(2)] == ["Stdout\n", "InputRequest\n"]
    kill_owner_once(owner, after_events=0)

    session = Session.attach(state_dir)
    resumed = Resumed(session)
    try:
        events = resumed.until(InputRequest, timeout=15)
        assert stdout_of(events) == "before\n"
        assert events[-1] == InputRequest("name? ")
        session.send_input("bob")
        events += resumed.until(_END, timeout=15)
        assert stdout_of(events) == "before\nhi bob\n"
        assert isinstance(events[-1], Finished) and events[-1].status == "ok"
    finally:
        session.shutdown()


def test_an_input_the_resumed_run_asks_after_the_re_attach_is_heard_and_answered(
    python_image: Image, state_dir: Path
) -> None:
    """ipykernel sends it to the first owner's stdin identity: the new owner listens as it."""
    code = "import time\ntime.sleep(3)\nname = input('name? ')\nprint('hi', name)"
    owner = start_owner(state_dir, python_image, code, timeout=None)
    wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)  # before the input() is asked

    session = Session.attach(state_dir)
    resumed = Resumed(session)
    try:
        events = resumed.until(InputRequest, timeout=15)
        assert events[-1] == InputRequest("name? ")
        session.send_input("bob")
        events += resumed.until(_END, timeout=15)
        assert stdout_of(events) == "hi bob\n"
        assert isinstance(events[-1], Finished) and events[-1].status == "ok"
    finally:
        session.shutdown()


def test_a_run_that_ended_before_a_later_request_began_is_finished_not_waited_on(
    python_image: Image, state_dir: Path
) -> None:
    # The monitor's spool starts afresh at each execute request's "busy": once a later
    # request began, the first run's end is no longer kept, and waiting for it would hang.
    owner = start_owner(state_dir, python_image, "import time; time.sleep(1)", timeout=None)
    wait_for_run(state_dir, owner)
    kill_owner_once(owner, after_events=0)
    time.sleep(2)  # the run ends while nobody is attached

    session = Session.attach(state_dir)
    try:
        kernel = session._kernel
        assert kernel is not None
        kernel.client.execute("later = 1")  # another client's request begins on the kernel
        time.sleep(1)
        events = Resumed(session).until(_END, timeout=15)
        assert isinstance(events[-1], Finished) and events[-1].status == "ok", events
        assert any(isinstance(e, OutputTruncated) for e in events), events
        assert stdout_of(list(session.execute("print(later)"))) == "1\n"
    finally:
        session.shutdown()
