"""How RunProgress (kernel/run_progress.py) reads one run's messages when the kernel ends a
request without a reply: ipykernel catches a KeyboardInterrupt that lands outside the code
("KeyboardInterrupt caught in kernel") and publishes idle with no execute_reply. Waiting for
that reply would hang the run, and the session behind it, for good."""

import time

import pytest

from cogbox.kernel import run_progress
from cogbox.kernel.events import Error, Finished
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.run_progress import RunProgress
from cogbox.kernel.run_request import RunRequest

GRACE = 0.1


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_progress, "REPLY_AFTER_IDLE_S", GRACE)


def _progress(interrupted: bool = False) -> RunProgress:
    return RunProgress(
        RunRequest("print(1)"),
        OutputCap(1 << 20),
        on_begun=lambda: None,
        interrupted=lambda: interrupted,
    )


def _begin_and_idle(progress: RunProgress) -> None:
    progress.take("iopub", "status", {"execution_state": "busy"})
    progress.take("iopub", "execute_input", {"code": "print(1)", "execution_count": 7})
    progress.take("iopub", "status", {"execution_state": "idle"})


def test_a_reply_after_its_idle_status_still_ends_the_run_normally() -> None:
    progress = _progress()
    _begin_and_idle(progress)
    progress.quiet(time.monotonic())  # at once: well within the grace
    assert not progress.over
    progress.take("shell", "execute_reply", {"status": "ok", "execution_count": 7})
    assert progress.over
    assert progress.finish(False, None) == [Finished("ok", 7)]


def test_idle_with_no_reply_ends_the_run_once_quiet_past_the_grace() -> None:
    progress = _progress()
    _begin_and_idle(progress)
    time.sleep(GRACE * 1.5)
    assert not progress.over  # messages may still be queued: only a quiet round decides
    progress.quiet(time.monotonic())
    assert progress.over
    (finished,) = progress.finish(False, None)
    assert isinstance(finished, Finished)
    assert (finished.status, finished.execution_count) == ("error", 7)
    assert "without a reply" in finished.message


def test_an_interrupted_request_without_a_reply_ends_in_keyboard_interrupt() -> None:
    progress = _progress(interrupted=True)
    _begin_and_idle(progress)
    time.sleep(GRACE * 1.5)
    progress.quiet(time.monotonic())
    error, finished = progress.finish(False, None)
    assert isinstance(error, Error) and error.ename == "KeyboardInterrupt"
    assert finished == Finished("error", 7)
    assert progress.passed == 1  # the error counts among the events given (input replay)


def test_a_timed_out_request_without_a_reply_ends_as_a_timeout() -> None:
    progress = _progress(interrupted=True)
    _begin_and_idle(progress)
    time.sleep(GRACE * 1.5)
    progress.quiet(time.monotonic())
    (finished,) = progress.finish(True, 3.0)
    assert isinstance(finished, Finished) and finished.status == "timeout"


def test_quiet_before_idle_ends_nothing() -> None:
    progress = _progress()
    progress.take("iopub", "execute_input", {"code": "print(1)", "execution_count": 1})
    progress.take("iopub", "stream", {"name": "stdout", "text": "1\n"})
    time.sleep(GRACE * 1.5)
    progress.quiet(time.monotonic())
    assert not progress.over
