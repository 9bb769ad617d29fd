"""A Jupyter channels WebSocket outlives a `kill -9` of the session's agent (issue 9, "nothing
is silently lost"): serve starts a new agent, the relay is opened again on it and the same
WebSocket goes on, with the kernel's variables. A cell running through the kill gets its
output from after the restart, an explicit error reply for the reply the dead agent took
with it, its iopub `idle`, and a notice on stderr that output may be lost meanwhile."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from jupyter_client.session import Session as Messages

from cogbox.images.store import Image
from cogbox.service.auth import jupyter_token
from cogbox.service.jupyter_gap import LOST_REPLY
from tests.service.support import Client, Service, needs_runc, running_service


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    with running_service(tmp_path_factory.mktemp("jupyter-restart")) as running:
        yield running


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"token {jupyter_token(client.access_key, client.secret_key)}"}


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


@pytest.fixture
def channels(service: Service, alice: Client) -> Iterator[websocket.WebSocket]:
    deadline = time.monotonic() + 60
    while True:  # an agent a previous test killed may still be on its way back (500 then)
        response = requests.post(
            alice.url + "/api/kernels",
            headers=_auth(alice),
            json={"name": "cogbox-python"},
            timeout=60,
        )
        if response.status_code < 500 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    url = alice.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=_auth(alice), timeout=90)
    try:
        yield ws
    finally:
        ws.close()
        requests.delete(alice.url + f"/api/kernels/{kernel_id}", headers=_auth(alice), timeout=60)


def _send(ws: websocket.WebSocket, code: str) -> str:
    request = Messages().msg("execute_request", {"code": code, "silent": False})
    ws.send(json.dumps({**request, "channel": "shell"}, default=str))
    return str(request["header"]["msg_id"])


def _until_done(ws: websocket.WebSocket, msg_id: str) -> list[dict[str, Any]]:
    """The messages of request `msg_id` until it has its reply and its iopub idle."""
    seen: list[dict[str, Any]] = []
    replied = idle = False
    while not (replied and idle):
        msg = json.loads(ws.recv())  # fails when the WebSocket closes
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        replied = replied or msg["msg_type"] == "execute_reply"
        idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
    return seen


def _stdout(seen: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in seen
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def _kill_agent(service: Service) -> None:
    pid = int((Path(service.directory) / "agent" / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)


def test_the_channels_websocket_goes_on_after_the_agent_is_killed(
    service: Service, channels: websocket.WebSocket
) -> None:
    _until_done(channels, _send(channels, "x = 41"))
    _kill_agent(service)
    time.sleep(1)  # the relay breaks; serve starts a new agent
    seen = _until_done(channels, _send(channels, "print(x + 1)"))
    assert _stdout(seen) == "42\n"


def test_a_cell_running_through_the_kill_is_answered_and_told_what_was_lost(
    service: Service, channels: websocket.WebSocket
) -> None:
    # 'after' comes once the new agent's relay is there (its restart took ~4.5 s here)
    code = "import time\nprint('before', flush=True)\ntime.sleep(15)\nprint('after', flush=True)"
    msg_id = _send(channels, code)
    while True:
        msg = json.loads(channels.recv())
        if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == msg_id:
            break  # 'before' arrived: the cell runs
    _kill_agent(service)
    seen = _until_done(channels, msg_id)
    reply = next(m for m in seen if m["msg_type"] == "execute_reply")
    assert (reply["content"]["status"], reply["content"]["ename"]) == ("error", LOST_REPLY)
    assert "after\n" in _stdout(seen)  # printed once the new agent's relay was there
    notices = [m["content"]["text"] for m in seen if m["msg_type"] == "stream"]
    assert any("agent restarted" in text for text in notices), notices
    assert _stdout(_until_done(channels, _send(channels, "print('next')"))) == "next\n"
