"""Kernels outlive the manager (issue 9): after a `kill -9` of `cogbox serve`, the next one
re-attaches to the agent, which kept every kernel and run going meanwhile. The session's
variable and file are there, a cell that printed while no manager ran delivers its whole
output (through Backend.AI's `continue` with the same runId, and in the session's log, once),
new code runs, and a session whose jail died meanwhile is reported dead with its reason.

The same after a `kill -9` of the agent too needs the kernel side of issue 9 (a monitor per
kernel, `Session.attach`): `test_the_agent_killed_too` checks it and fails without it.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from cogbox.images.store import Image
from tests.service.support import Client, Service, needs_runc, stdout_of

TICKS = 10
LOOP = (
    "import time\n"
    f"for i in range({TICKS}):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(1)\n"
)
# Past its jail's memory limit a few seconds in: the kernel dies while no manager runs.
BLOW_UP = "import time\ntime.sleep(3)\nblob = bytearray(1 << 30)\nblob[::4096] = b'x' * (1 << 18)\n"


@dataclass
class Restarted:
    service: Service
    client: Client
    ref: str
    doomed: str
    answers: list[dict[str, Any]] = field(default_factory=list)


def _query(client: Client, ref: str, run_id: str, code: str, into: list[object]) -> None:
    try:
        response = client.request(
            "POST", f"/session/{ref}", json={"mode": "query", "runId": run_id, "code": code}
        )
        into.append(response.json())
    except requests.RequestException as exc:  # the service was killed under it
        into.append(exc)


def _continue_until_done(client: Client, ref: str, run_id: str) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.request(
            "POST", f"/session/{ref}", json={"mode": "continue", "runId": run_id}
        )
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        answers.append(result)
        if result["status"] != "continued":
            return answers
    raise AssertionError(f"run {run_id} did not finish: {answers}")


def _kill_service(service: Service) -> None:
    assert service.process is not None
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(30)


@pytest.fixture(scope="module")
def restarted(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    directory: Path = tmp_path_factory.mktemp("survives")
    service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
    try:
        client = service.keypair()
        ref = client.create()["id"]
        client.execute(ref, "x = 41\nopen('kept.txt', 'w').write('kept')")
        doomed = client.create(memory="128m")["id"]
        started: list[object] = []
        threads = [
            threading.Thread(target=_query, args=(client, ref, "loop", LOOP, started)),
            threading.Thread(target=_query, args=(client, doomed, "boom", BLOW_UP, started)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(2.5)  # the loop printed a few ticks; the doomed cell has not blown up
        _kill_service(service)
        for thread in threads:
            thread.join(30)
        time.sleep(4)  # the loop goes on printing, the doomed kernel dies: nobody listens
        service.start()
        yield Restarted(service, client, ref, doomed, _continue_until_done(client, ref, "loop"))
    finally:
        service.stop()


def test_session_stays_running_with_its_variable_and_file(restarted: Restarted) -> None:
    client, ref = restarted.client, restarted.ref
    listed = client.request("GET", f"/v1/sessions/{ref}").json()
    assert listed["status"] == "running"
    assert stdout_of(client.execute(ref, "print(x + 1)")) == "42\n"
    download = client.request(
        "GET", f"/v1/sessions/{ref}/files/content", params={"path": "kept.txt"}
    )
    assert (download.status_code, download.content) == (200, b"kept")


def test_the_cells_whole_output_arrives_through_continue(restarted: Restarted) -> None:
    printed = "".join(
        text for answer in restarted.answers for kind, text in answer["console"] if kind == "stdout"
    )
    assert printed == "".join(f"tick {i}\n" for i in range(TICKS))
    assert restarted.answers[-1]["status"] == "finished"


def test_the_log_holds_the_whole_output_once(restarted: Restarted) -> None:
    log = restarted.client.request("GET", f"/v1/sessions/{restarted.ref}/logs").text
    assert log == "42\n" or log.startswith("".join(f"tick {i}\n" for i in range(TICKS)))
    assert [line for line in log.splitlines() if line.startswith("tick")] == [
        f"tick {i}" for i in range(TICKS)
    ]


def test_a_kernel_that_died_meanwhile_is_reported_dead_with_its_reason(
    restarted: Restarted,
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = restarted.client.request("GET", f"/v1/sessions/{restarted.doomed}").json()
        if record["status"] == "dead":
            break
        time.sleep(0.5)
    assert (record["status"], record["status_info"]) == ("dead", "oom")


def test_the_agent_killed_too(restarted: Restarted) -> None:
    """Needs the monitor branch: the new agent re-attaches through Session.attach."""
    service, client, ref = restarted.service, restarted.client, restarted.ref
    client.execute(ref, "y = 7")
    pid = int((service.directory / "agent" / "agent.pid").read_text())
    _kill_service(service)
    os.kill(pid, signal.SIGKILL)
    service.start()
    listed = client.request("GET", f"/v1/sessions/{ref}").json()
    assert listed["status"] == "running", listed
    assert stdout_of(client.execute(ref, "print(x + y)")) == "48\n"


def test_a_cell_running_through_a_kill_of_the_agent_alone_arrives_once(
    restarted: Restarted,
) -> None:
    """serve stays up and the agent is killed mid-cell: the run's stream follows the new
    agent from the last event it had (the monitor kept the kernel and spooled its output),
    so Backend.AI's client gets every tick exactly once, not the run again from its start."""
    service, client, ref = restarted.service, restarted.client, restarted.ref
    started: list[object] = []
    query = threading.Thread(target=_query, args=(client, ref, "agent-loop", LOOP, started))
    query.start()
    time.sleep(2.5)  # a few ticks printed and delivered to the query's pump
    pid = int((service.directory / "agent" / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    query.join(60)
    first = started[0]
    assert isinstance(first, dict), first
    answers = [first["result"]]
    if answers[0]["status"] == "continued":
        answers += _continue_until_done(client, ref, "agent-loop")
    printed = "".join(
        text for answer in answers for kind, text in answer["console"] if kind == "stdout"
    )
    assert printed == "".join(f"tick {i}\n" for i in range(TICKS))
    assert answers[-1]["status"] == "finished"
