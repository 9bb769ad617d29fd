"""A SIGKILL of `cogbox serve` loses no work: its agent keeps the kernels, so at the next
start its sessions are listed `running` with their variables and files, and a signed request
seen before the kill is still refused as a replay. (tests/e2e/test_survives_restart.py
follows a run through the kill.)

Attack family (replay test): bugs in the service's own API (replayed signed requests)."""

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cogbox.images.store import Image
from tests.service.support import Service, needs_runc, stdout_of


@dataclass
class AfterKill:
    session_id: str
    listed: list[tuple[str, str]]
    download: requests.Response
    value: str
    replayed: requests.Response
    first_use_status: int


@pytest.fixture(scope="module")
def after_kill(
    python_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AfterKill]:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    directory: Path = tmp_path_factory.mktemp("killed")
    service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
    try:
        client = service.keypair()
        ref = client.create()["id"]
        client.execute(ref, "score = 0.5\nopen('results.txt', 'w').write('trained')")
        # A signed request, used once before the kill and replayed after the restart.
        prepared = requests.Request("GET", service.url + "/v1/sessions", auth=client.signer)
        request = prepared.prepare()
        first = requests.Session().send(request, timeout=30)
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(30)
        service.start()
        listed = client.request("GET", "/v1/sessions").json()["sessions"]
        download = client.request(
            "GET", f"/v1/sessions/{ref}/files/content", params={"path": "results.txt"}
        )
        value = stdout_of(client.execute(ref, "print(score * 2)"))
        replayed = requests.Session().send(request, timeout=30)
        yield AfterKill(
            ref,
            [(s["id"], s["status"]) for s in listed],
            download,
            value,
            replayed,
            first.status_code,
        )
    finally:
        service.stop()


def test_session_is_still_running_after_the_service_was_killed(after_kill: AfterKill) -> None:
    assert after_kill.listed == [(after_kill.session_id, "running")]


def test_variables_of_a_session_survive_a_sigkill_of_the_service(after_kill: AfterKill) -> None:
    assert after_kill.value == "1.0\n"


def test_files_of_a_session_survive_a_sigkill_of_the_service(after_kill: AfterKill) -> None:
    assert (after_kill.download.status_code, after_kill.download.content) == (200, b"trained")


def test_signed_request_replayed_after_a_restart_is_refused(after_kill: AfterKill) -> None:
    assert (after_kill.first_use_status, after_kill.replayed.status_code) == (200, 401)
    assert after_kill.replayed.json()["error"] == "replayed-request"


def test_a_job_running_through_a_sigkill_of_the_service_ends_with_its_result_and_log(
    python_image: Image, tmp_path: Path
) -> None:
    """The job's command goes on in the agent while the service is down; the next service
    follows it to its end: SUCCESS with exit status 0 and the whole output in its log (it
    was recorded `lost` before, its command's end unnoticed)."""
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    service = Service(tmp_path, f"sqlite:///{tmp_path / 'cogbox.db'}").start("--pool", "python=0")
    try:
        client = service.keypair()
        command = "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done; echo finished"
        ref = client.create(type="batch", startup_command=command)["id"]
        deadline = time.monotonic() + 60
        while client.request("GET", f"/v1/sessions/{ref}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(30)
        service.start()
        deadline = time.monotonic() + 60
        while True:
            info = client.request("GET", f"/v1/sessions/{ref}").json()
            if info["status"] in ("terminated", "cancelled", "error", "lost", "dead"):
                break
            assert time.monotonic() < deadline, f"the job did not end: {info}"
            time.sleep(0.2)
        log = client.request("GET", f"/v1/sessions/{ref}/logs").content
    finally:
        service.stop()
    assert (info["status"], info["result"], info["exit_code"]) == ("terminated", "SUCCESS", 0)
    expected = "".join(f"tick {i}\n" for i in range(1, 7)) + "finished\n"
    assert log.decode() == expected
