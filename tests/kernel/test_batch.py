"""Batch mode: build and exec commands run as processes in the session's jail."""

import time

from cogbox.kernel.events import Event, Finished
from cogbox.kernel.session import Session
from tests.kernel.support import stderr_of, stdout_of


def batch(
    session: Session, build: str | None, exec: str, timeout: float | None = None
) -> list[Event]:
    """Every event of one batch run; checks it ended with a Finished event."""
    events = list(session.execute_batch(build, exec, timeout=timeout))
    assert isinstance(events[-1], Finished), events
    return events


def finished_of(events: list[Event]) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def test_build_then_exec_stream_their_output_and_finish_ok(python_session: Session) -> None:
    events = batch(python_session, "echo building; echo note >&2", "echo running")
    assert (stdout_of(events), stderr_of(events)) == ("building\nrunning\n", "note\n")
    assert events[-1] == Finished("ok", None, "", 0)


def test_failing_exec_reports_its_exit_status(python_session: Session) -> None:
    finished = finished_of(batch(python_session, None, "echo partial; exit 3"))
    assert (finished.status, finished.exit_code) == ("error", 3)
    assert "exec command exited with status 3" in finished.message


def test_failing_build_skips_the_exec_command(python_session: Session) -> None:
    events = batch(python_session, "exit 2", "echo should-not-run")
    assert "should-not-run" not in stdout_of(events)
    finished = finished_of(events)
    assert (finished.exit_code, "exec command was not run" in finished.message) == (2, True)


def test_commands_run_in_home_work_of_the_same_jail(python_session: Session) -> None:
    list(python_session.execute("open('/home/work/from_kernel.txt', 'w').write('shared')"))
    events = batch(python_session, None, "pwd; cat from_kernel.txt")
    assert stdout_of(events) == "/home/work\nshared"


def test_output_streams_while_the_command_runs(python_session: Session) -> None:
    started = time.monotonic()
    first_seen = float("inf")
    for event in python_session.execute_batch(None, "echo first; sleep 2; echo second"):
        if stdout_of([event]) == "first\n":
            first_seen = time.monotonic() - started
    assert first_seen < 1.5


def test_time_limit_stops_the_command_and_keeps_the_variables(python_session: Session) -> None:
    list(python_session.execute("batch_kept = 7"))
    started = time.monotonic()
    finished = finished_of(batch(python_session, None, "sleep 60", timeout=1))
    assert (finished.status, time.monotonic() - started < 4) == ("timeout", True)
    assert stdout_of(list(python_session.execute("print(batch_kept)"))) == "7\n"


def test_batch_runs_on_the_python_27_kernel_of_cntk(cntk_session: Session) -> None:
    events = batch(
        cntk_session, "python --version", "python -c 'import cntk; print(cntk.__version__)'"
    )
    assert ("2.7" in stderr_of(events) + stdout_of(events), stdout_of(events).strip()[-3:]) == (
        True,
        "2.7",
    )
    assert finished_of(events).exit_code == 0
