"""The pure parts of jobs and logs: a job's outcome, dependency states, the bounded log
writer and its reader, the GraphQL field scan, and old databases gaining the job columns.
No kernel or jail: these run in the fast tier."""

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cogbox.kernel.events import Error, Finished, KernelDied, Stderr, Stdout
from cogbox.service.db import Database, SessionRecord
from cogbox.service.errors import ServiceError
from cogbox.service.job_views import job_fields, top_fields
from cogbox.service.jobs import dependency_state, job_outcome
from cogbox.service.logs import LogWriter, limit_marker, log_name, read_log, remove_log
from tests.service.test_persistence import _FIRST_RELEASE_TABLES

SESSION = "0f0f0f0f-0000-4000-8000-000000000001"


def test_exit_0_is_success() -> None:
    assert job_outcome(Finished("ok", None, "", 0)).result == "SUCCESS"


def test_exit_3_is_failure_with_the_status_in_the_reason() -> None:
    outcome = job_outcome(Finished("error", None, "the exec command exited with status 3", 3))
    assert (outcome.result, outcome.exit_code, outcome.reason) == ("FAILURE", 3, "exit 3")


def test_a_killed_command_names_the_signal() -> None:
    assert job_outcome(Finished("error", None, "", 137)).reason == "exit 137 (signal 9)"


def test_a_jail_that_ended_gives_the_jails_reason() -> None:
    died = KernelDied("oom", "killed: out of memory (memory limit 256 MiB)", 137)
    outcome = job_outcome(died)
    assert (outcome.result, outcome.reason, "out of memory" in outcome.message) == (
        "FAILURE",
        "oom",
        True,
    )


def test_a_time_limit_is_a_failure() -> None:
    assert job_outcome(Finished("timeout", None, "stopped")).reason == "batch-timeout"


def _record(status: str, result: str | None = None) -> SessionRecord:
    return SessionRecord(
        SESSION, "dep", "AK", "python", status, "", 1.0, 1.0, None, 60.0, 60.0, "/x",
        result=result,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "result", "state"),
    [
        ("running", None, "waiting"),
        ("pending", None, "waiting"),
        ("terminated", "SUCCESS", "done"),
        ("terminated", None, "done"),  # an interactive session that ended
        ("terminated", "FAILURE", "failed"),
        ("cancelled", "FAILURE", "failed"),
        ("error", None, "failed"),
        ("lost", None, "failed"),
    ],
)
def test_dependency_states(status: str, result: str | None, state: str) -> None:
    assert dependency_state(_record(status, result)) == state


def test_a_dependency_that_is_gone_has_failed() -> None:
    assert dependency_state(None) == "failed"


def test_the_log_holds_stdout_stderr_and_tracebacks_in_order(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path, SESSION)
    writer.write_event(Stdout("out\n"))
    writer.write_event(Stderr("err\n"))
    writer.write_event(Error("ValueError", "bad", ["\x1b[31mTraceback\x1b[0m", "ValueError: bad"]))
    writer.close()
    assert b"".join(read_log(tmp_path, SESSION)) == b"out\nerr\nTraceback\nValueError: bad\n"


def test_the_log_is_cut_at_its_limit_with_one_marker(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path, SESSION, limit=10)
    writer.write(b"12345678")
    writer.write(b"abcdef")
    writer.write(b"more")
    writer.close()
    assert b"".join(read_log(tmp_path, SESSION)) == b"12345678ab" + limit_marker(10)


def test_a_reopened_log_appends_and_keeps_counting(tmp_path: Path) -> None:
    first = LogWriter(tmp_path, SESSION, limit=6)
    first.write(b"abcd")
    first.close()
    second = LogWriter(tmp_path, SESSION, limit=6)
    second.write(b"efgh")
    second.close()
    assert b"".join(read_log(tmp_path, SESSION)) == b"abcdef" + limit_marker(6)


def test_reading_from_an_offset_and_for_a_length(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path, SESSION)
    writer.write(b"0123456789")
    writer.close()
    assert b"".join(read_log(tmp_path, SESSION, 3, 4)) == b"3456"


def test_a_session_without_a_log_reads_as_empty(tmp_path: Path) -> None:
    assert list(read_log(tmp_path, SESSION)) == []


def test_the_log_is_private_to_the_service(tmp_path: Path) -> None:
    LogWriter(tmp_path / "logs", SESSION).close()
    modes = (
        (tmp_path / "logs").stat().st_mode & 0o777,
        (tmp_path / "logs" / log_name(SESSION)).stat().st_mode & 0o777,
    )
    assert modes == (0o700, 0o600)


def test_a_link_planted_at_the_logs_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / "logs").mkdir()
    os.symlink(target, tmp_path / "logs" / log_name(SESSION))
    with pytest.raises(OSError):
        LogWriter(tmp_path / "logs", SESSION)
    assert target.read_bytes() == b""


def test_a_log_name_is_never_a_path() -> None:
    with pytest.raises(ValueError):
        log_name("../../etc/passwd")


def test_removing_a_log(tmp_path: Path) -> None:
    LogWriter(tmp_path, SESSION).close()
    remove_log(tmp_path, SESSION)
    remove_log(tmp_path, SESSION)  # already gone: no error
    assert list(tmp_path.iterdir()) == []


def test_top_fields_skip_sub_selections() -> None:
    query = "query($id: UUID!) { compute_session(id: $id) { name containers { id image } "
    query += "dependencies { name id } status } }"
    assert top_fields(query, "compute_session") == ["name", "containers", "dependencies", "status"]


def test_job_fields_of_a_backendai_create_body() -> None:
    body = {"type": "batch", "startupCommand": "make", "dependencies": ["a"], "batchTimeout": 5}
    assert job_fields(body) == {
        "session_type": "batch",
        "startup_command": "make",
        "dependencies": ["a"],
        "batch_timeout": 5.0,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "cron"}, "'type'"),
        ({"startupCommand": 3}, "'startupCommand'"),
        ({"dependencies": "a"}, "'dependencies'"),
        ({"batchTimeout": -1}, "'batchTimeout'"),
    ],
)
def test_malformed_job_fields_are_refused_by_name(body: dict[str, object], field: str) -> None:
    with pytest.raises(ServiceError) as refused:
        job_fields(body)
    assert (refused.value.status, field in refused.value.message) == (400, True)


def test_an_old_database_gains_the_job_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in _FIRST_RELEASE_TABLES:
            connection.execute(text(statement))
    engine.dispose()
    db = Database(url)
    try:
        old = "00000000-0000-0000-0000-000000000000"
        before = db.get_session(old)
        db.update_session(old, session_type="batch", result="FAILURE", exit_code=3)
        after = db.get_session(old)
    finally:
        db.close()
    assert before is not None and after is not None
    assert (before.session_type, before.result, after.is_batch, after.exit_code) == (
        None,
        None,
        True,
        3,
    )
