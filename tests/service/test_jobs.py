"""Batch sessions (jobs) and full logs through the native API, on a real service and jail."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.store import Image
from tests.service.support import Client, Service, needs_runc, running_service

_ENDED = ("terminated", "cancelled", "error", "lost")


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # A small per-run cap and log limit, so both are reached with little output.
    with running_service(
        tmp_path_factory.mktemp("jobs"), "--pool", "python=0", "--output-limit", "1000",
        "--log-limit", "200000",
    ) as running:  # fmt: skip
        yield running


def job(client: Client, command: str, **body: Any) -> dict[str, Any]:
    return client.create(type="batch", startup_command=command, **body)


def wait_ended(client: Client, ref: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = dict(client.request("GET", f"/v1/sessions/{ref}").json())
        if info["status"] in _ENDED:
            return info
        time.sleep(0.2)
    raise AssertionError(f"session {ref} did not end: {info}")


def log_of(client: Client, ref: str, offset: int = 0) -> bytes:
    response = client.request("GET", f"/v1/sessions/{ref}/logs", params={"offset": offset})
    assert response.status_code == 200, response.text
    return response.content


def test_a_job_ends_by_itself_with_success_and_its_exit_status(service: Service) -> None:
    client = service.keypair()
    created = job(client, "echo done")
    info = wait_ended(client, created["id"])
    assert (info["status"], info["result"], info["exit_code"], info["type"]) == (
        "terminated",
        "SUCCESS",
        0,
        "batch",
    )


def test_a_failing_job_is_failed_with_its_exit_status(service: Service) -> None:
    client = service.keypair()
    info = wait_ended(client, job(client, "echo oops >&2; exit 3")["id"])
    assert (info["result"], info["exit_code"], info["status_info"]) == ("FAILURE", 3, "exit 3")


def test_a_jobs_whole_output_is_in_its_log_past_the_per_run_cap(service: Service) -> None:
    client = service.keypair()
    command = "python3 -c \"import sys; [print('line %05d' % i) for i in range(5000)]\""
    created = job(client, command)
    wait_ended(client, created["id"])
    expected = "".join(f"line {i:05d}\n" for i in range(5000)).encode()
    assert log_of(client, created["id"]) == expected


def test_a_log_is_readable_from_an_offset(service: Service) -> None:
    client = service.keypair()
    created = job(client, "printf 0123456789")
    wait_ended(client, created["id"])
    assert log_of(client, created["id"], offset=4) == b"456789"


def test_a_log_stops_at_its_limit_with_a_marker(service: Service) -> None:
    client = service.keypair()
    created = job(client, "head -c 300000 /dev/zero | tr '\\0' x")
    wait_ended(client, created["id"])
    data = log_of(client, created["id"])
    assert (data[:200000], data[200000:].startswith(b"\n[cogbox: this session's log reached")) == (
        b"x" * 200000,
        True,
    )


def test_an_interactive_runs_dropped_output_is_still_in_the_log(service: Service) -> None:
    client = service.keypair()
    session = client.create()
    run = client.execute(session["id"], "print('y' * 5000)")
    kinds = [e["kind"] for e in run["events"]]
    assert "output_truncated" in kinds
    assert log_of(client, session["id"]) == b"y" * 5000 + b"\n"
    client.request("DELETE", f"/v1/sessions/{session['id']}")


def test_a_session_may_ask_for_its_own_output_cap(service: Service) -> None:
    client = service.keypair()
    session = client.create(output_limit=10000)
    run = client.execute(session["id"], "print('y' * 5000)")
    assert "output_truncated" not in [e["kind"] for e in run["events"]]
    client.request("DELETE", f"/v1/sessions/{session['id']}")


def test_a_dependent_job_starts_only_after_its_dependency_ended(service: Service) -> None:
    client = service.keypair()
    first = job(client, "sleep 2; python3 -c 'import time; print(time.time())'")
    second = job(client, "python3 -c 'import time; print(time.time())'", depends=[first["name"]])
    assert client.request("GET", f"/v1/sessions/{second['id']}").json()["status"] == "pending"
    a, b = wait_ended(client, first["id"]), wait_ended(client, second["id"])
    assert (a["result"], b["result"]) == ("SUCCESS", "SUCCESS")
    assert float(log_of(client, second["id"])) > float(log_of(client, first["id"]))


def test_a_job_whose_dependency_failed_is_cancelled(service: Service) -> None:
    client = service.keypair()
    first = job(client, "exit 1")
    second = job(client, "echo never", depends=[first["id"]])
    info = wait_ended(client, second["id"])
    assert (info["status"], info["status_info"], log_of(client, second["id"])) == (
        "cancelled",
        "dependency-failed",
        b"",
    )


def test_a_job_over_the_session_limit_waits_pending_with_the_reason(service: Service) -> None:
    client = service.keypair("--max-sessions", "1")
    blocker = client.create()
    waiting = job(client, "echo ran")
    time.sleep(1.5)
    info = client.request("GET", f"/v1/sessions/{waiting['id']}").json()
    assert (info["status"], "too-many-sessions" in info["status_info"]) == ("pending", True)
    client.request("DELETE", f"/v1/sessions/{blocker['id']}")
    assert wait_ended(client, waiting["id"])["result"] == "SUCCESS"


def test_following_a_log_streams_until_the_job_ends(service: Service) -> None:
    client = service.keypair()
    created = job(client, "for i in 1 2 3; do echo $i; sleep 0.5; done")
    response = client.request(
        "GET", f"/v1/sessions/{created['id']}/logs", params={"follow": "1"}, timeout=60
    )
    assert response.content == b"1\n2\n3\n"


def test_a_job_needs_a_command_and_unknown_dependencies_are_refused(service: Service) -> None:
    client = service.keypair()
    no_command = client.request("POST", "/v1/sessions", json={"image": "python", "type": "batch"})
    unknown = client.request(
        "POST",
        "/v1/sessions",
        json={"image": "python", "type": "batch", "startup_command": "true", "depends": ["nope"]},
    )
    assert (no_command.status_code, unknown.status_code, "'dependencies'" in unknown.text) == (
        400,
        400,
        True,
    )


def test_destroying_an_ended_session_deletes_its_log(service: Service) -> None:
    client = service.keypair()
    created = job(client, "echo kept")
    wait_ended(client, created["id"])
    kept = log_of(client, created["id"])
    client.request("DELETE", f"/v1/sessions/{created['id']}")
    assert (kept, log_of(client, created["id"])) == (b"kept\n", b"")


def test_log_offsets_must_be_numbers(service: Service) -> None:
    client = service.keypair()
    created = job(client, "true")
    response = client.request("GET", f"/v1/sessions/{created['id']}/logs?offset=-1")
    assert response.status_code == 400


def test_a_job_still_pending_when_the_service_restarts_is_cancelled(
    python_image: Image, tmp_path: Path
) -> None:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    service = Service(tmp_path, f"sqlite:///{tmp_path / 'cogbox.db'}")
    service.start("--pool", "python=0")
    try:
        client = service.keypair("--max-sessions", "1")
        client.create()
        waiting = job(client, "echo never")
        service.stop()
        service.start("--pool", "python=0")
        info = client.request("GET", f"/v1/sessions/{waiting['id']}").json()
    finally:
        service.stop()
    assert (info["status"], info["status_info"], info["result"]) == (
        "cancelled",
        "service-restarted",
        "FAILURE",
    )
