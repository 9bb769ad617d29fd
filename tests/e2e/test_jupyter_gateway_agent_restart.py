"""End to end: a notebook run by nbclient through jupyter_server's gateway client goes on
across a `kill -9` of the agent (issue 9, "nothing is silently lost"). Its kernel does not
die for the client: the cell running through the kill ends (its lost reply said so, a
notice on stderr says output may be lost meanwhile) and the next cells run on the same
kernel, with its variables."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cogbox.images.store import Image
from cogbox.service.auth import jupyter_token
from tests.e2e.test_jupyter_gateway import _gateway_client, _run_notebook, _stdout
from tests.service.support import Client, Service, running_service

# The second cell's 'after' comes once the new agent's relay is there (~4.5 s here).
CELLS = [
    "x = 41",
    "import time\nprint('before', flush=True)\ntime.sleep(15)\nprint('after', flush=True)",
    "print(x + 1)",
]


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("gateway-restart")) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(service: Service) -> Iterator[Client]:
    yield from _gateway_client(service)


def _kill_agent_while_a_cell_runs(service: Service, keys: Client, killed: list[float]) -> None:
    """SIGKILL the agent once the kernel has been busy for two polls in a row (the sleeping
    cell: the first one takes milliseconds)."""
    token = jupyter_token(keys.access_key, keys.secret_key)
    busy = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and busy < 2:
        time.sleep(0.3)
        listed = requests.get(
            service.url + "/api/kernels", headers={"Authorization": f"token {token}"}, timeout=30
        ).json()
        busy = busy + 1 if any(k["execution_state"] == "busy" for k in listed) else 0
    pid = int((Path(service.directory) / "agent" / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    killed.append(time.monotonic())


def test_a_notebook_runs_on_through_a_kill_of_the_agent(service: Service, gateway: Client) -> None:
    killed: list[float] = []
    killer = threading.Thread(target=_kill_agent_while_a_cell_runs, args=(service, gateway, killed))
    killer.start()
    try:
        outputs = _run_notebook(CELLS, "python3")
    finally:
        killer.join(120)
    assert killed, "the agent was never killed: the sleeping cell was not seen running"
    assert _stdout(outputs[2]) == "42\n"  # the same kernel, its variable kept
    assert "after\n" in _stdout(outputs[1])
    notices = [o["text"] for cell in outputs for o in cell if o.get("name") == "stderr"]
    assert any("agent restarted" in text for text in notices), outputs
