"""End to end: batch sessions (jobs) and full logs with the unmodified PyPI
`backend.ai-client` 23.3.12 (`session create --type batch -c CMD --depends`, `ps -a`,
`session info`, `session logs`) and cogbox's own `logs` and `session ls`, against
`cogbox serve`."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.store import Image
from tests.e2e.test_backendai_client import backendai  # noqa: F401 (a fixture)
from tests.service.support import Client, Service, running_service

_ENDED = ("terminated", "cancelled", "error", "lost")
# 1.3 MB of distinct lines, more than twice the interactive cap of 512 KiB.
BIG_JOB = (
    "python3 -c \"import sys\nfor i in range(26000): sys.stdout.write('%08d ' % i + 'x' * 40 "
    "+ '\\n')\""
)
BIG_OUTPUT = b"".join(b"%08d " % i + b"x" * 40 + b"\n" for i in range(26000))


@pytest.fixture(scope="module")
def jobs_service(
    python_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("bai-jobs"), "--pool", "python=0") as service:
        yield service


def env_of(keys: Client) -> dict[str, str]:
    return {
        **os.environ,
        "BACKEND_ENDPOINT": keys.url,
        "BACKEND_ACCESS_KEY": keys.access_key,
        "BACKEND_SECRET_KEY": keys.secret_key,
        "BACKEND_ENDPOINT_TYPE": "api",
        "COGBOX_ENDPOINT": keys.url,
        "COGBOX_ACCESS_KEY": keys.access_key,
        "COGBOX_SECRET_KEY": keys.secret_key,
    }


def bai(command: Path, keys: Client, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(command), *args], env=env_of(keys), capture_output=True, timeout=180)


def cogbox(keys: Client, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cogbox.cli", *args],
        env=env_of(keys),
        capture_output=True,
        timeout=180,
    )


def submit(command: Path, keys: Client, name: str, job: str, *more: str) -> None:
    made = bai(command, keys, "session", "create", "--type", "batch", "-t", name, "-c", job,
               *more, "python")  # fmt: skip
    assert b"enqueued" in made.stderr or b"created" in made.stderr, made.stderr


def info(keys: Client, ref: str) -> dict[str, Any]:
    return dict(keys.request("GET", f"/v1/sessions/{ref}").json())


def wait_ended(keys: Client, ref: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = info(keys, ref)
        if found["status"] in _ENDED:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{ref} did not end: {found}")


def ps_row(command: Path, keys: Client, name: str) -> list[str]:
    ps = bai(command, keys, "ps", "-a").stdout.decode()
    rows = [line for line in ps.splitlines() if line.split()[:1] == [name]]
    assert rows, ps
    return rows[0].split()


def test_a_big_jobs_whole_log_is_byte_exact_after_it_ended(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair()
    submit(backendai, keys, "big-job", BIG_JOB)
    assert wait_ended(keys, "big-job")["result"] == "SUCCESS"
    via_bai = bai(backendai, keys, "session", "logs", "big-job")
    via_cogbox = cogbox(keys, "logs", "big-job")
    # `backend.ai session logs` prints the log, then a newline of its own.
    assert (via_bai.stdout == BIG_OUTPUT + b"\n", via_cogbox.stdout == BIG_OUTPUT) == (True, True)


def test_a_failing_job_shows_failed_with_exit_3(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair()
    submit(backendai, keys, "fail-job", "echo about to fail; exit 3")
    session_id = wait_ended(keys, "fail-job")["id"]
    row = ps_row(backendai, keys, "fail-job")
    shown = bai(backendai, keys, "session", "info", session_id).stdout.decode()
    listed = cogbox(keys, "session", "ls", "--all").stdout.decode()
    ls_row = next(line for line in listed.splitlines() if line.strip().startswith("fail-job"))
    assert ("BATCH" in row, "TERMINATED" in row, "FAILURE" in row, "3)" in " ".join(row)) == (
        True,
        True,
        True,
        True,
    ), row
    assert re.search(r"terminated \(exit 3\)", shown), shown
    assert "FAILURE (exit 3)" in ls_row, listed


def test_depends_starts_b_only_after_a_ended(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair()
    stamp = "python3 -c 'import time; print(repr(time.time()))'"
    submit(backendai, keys, "dep-a", f"sleep 3; {stamp}")
    submit(backendai, keys, "dep-b", stamp, "--depends", "dep-a")
    pending = ps_row(backendai, keys, "dep-b")
    a, b = wait_ended(keys, "dep-a"), wait_ended(keys, "dep-b")
    a_printed = float(cogbox(keys, "logs", "dep-a").stdout)
    b_printed = float(cogbox(keys, "logs", "dep-b").stdout)
    assert "PENDING" in pending, pending
    assert (a["result"], b["result"], b_printed > a_printed) == ("SUCCESS", "SUCCESS", True)


def test_a_job_over_the_limit_waits_pending_with_the_reason(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair("--max-sessions", "1")
    submit(backendai, keys, "first-job", "sleep 4")
    submit(backendai, keys, "queued-job", "echo my turn")
    time.sleep(1.5)
    row = " ".join(ps_row(backendai, keys, "queued-job"))
    assert ("PENDING" in row, "too-many-sessions" in row) == (True, True), row
    assert wait_ended(keys, "queued-job")["result"] == "SUCCESS"
    assert cogbox(keys, "logs", "queued-job").stdout == b"my turn\n"


def test_a_job_completes_after_its_client_disconnected(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair()
    submit(backendai, keys, "detached", "for i in 1 2 3 4; do echo tick $i; sleep 1; done")
    follower = subprocess.Popen(
        [sys.executable, "-m", "cogbox.cli", "logs", "-f", "detached"],
        env=env_of(keys),
        stdout=subprocess.PIPE,
    )
    assert follower.stdout is not None
    first = follower.stdout.readline()
    follower.send_signal(signal.SIGKILL)  # the client goes away mid-job
    follower.wait()
    ended = wait_ended(keys, "detached")
    whole = cogbox(keys, "logs", "-f", "detached").stdout
    assert (first, ended["result"], whole) == (
        b"tick 1\n",
        "SUCCESS",
        b"tick 1\ntick 2\ntick 3\ntick 4\n",
    )


def test_session_logs_of_an_interactive_session_hold_what_the_cap_dropped(
    backendai: Path,  # noqa: F811
    jobs_service: Service,
) -> None:
    keys = jobs_service.keypair()
    code = "print('z' * 600000)"
    run = bai(backendai, keys, "run", "--name", "chatty", "python", "-c", code)
    logs = bai(backendai, keys, "session", "logs", "chatty")
    bai(backendai, keys, "session", "destroy", "chatty")
    assert run.stdout.count(b"z") < 600000, len(run.stdout)
    assert logs.stdout == b"z" * 600000 + b"\n\n"
