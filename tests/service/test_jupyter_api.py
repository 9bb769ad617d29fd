"""The Jupyter Server kernels API on cogbox sessions: REST lifecycle, token auth, and the
channels WebSocket (JSON framing, all channels) spoken with raw Jupyter messages.

Attack family (auth tests): bugs in the service's own API (no or a forged token; one
tenant reaching another's kernel)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from jupyter_client.session import Session as Messages

from cogbox.service.auth import jupyter_token
from tests.service.support import Client, Service


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"token {jupyter_token(client.access_key, client.secret_key)}"}


def _api(client: Client, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, client.url + path, headers=_auth(client), timeout=60, **kwargs)


@pytest.fixture(scope="module")
def kernel(service: Service, alice: Client) -> Iterator[dict[str, Any]]:
    response = _api(alice, "POST", "/api/kernels", json={"name": "cogbox-python"})
    assert response.status_code == 201, response.text
    model = dict(response.json())
    yield model
    _api(alice, "DELETE", f"/api/kernels/{model['id']}")


def test_kernelspecs_name_one_spec_per_image(service: Service, alice: Client) -> None:
    specs = _api(alice, "GET", "/api/kernelspecs").json()
    assert (specs["default"], specs["kernelspecs"]["cogbox-python"]["name"]) == (
        "cogbox-python",
        "cogbox-python",
    )


def test_started_kernel_has_jupyters_model(kernel: dict[str, Any]) -> None:
    assert (sorted(kernel), kernel["name"], kernel["execution_state"]) == (
        ["connections", "execution_state", "id", "last_activity", "name"],
        "cogbox-python",
        "idle",
    )


def test_kernel_is_a_session_of_the_native_api(alice: Client, kernel: dict[str, Any]) -> None:
    session = alice.request("GET", f"/v1/sessions/{kernel['id']}").json()
    assert (session["image"], session["status"]) == ("python", "running")


def test_request_without_token_is_refused(service: Service) -> None:
    response = requests.get(service.url + "/api/kernels", timeout=30)
    assert (response.status_code, response.json()["error"]) == (401, "auth-failed")


def test_forged_token_is_refused(service: Service, alice: Client) -> None:
    forged = f"{alice.access_key}.{'0' * 40}"
    response = requests.get(
        service.url + "/api/kernels", headers={"Authorization": f"token {forged}"}, timeout=30
    )
    assert response.status_code == 401


def test_other_keypair_cannot_see_or_shut_down_the_kernel(
    bob: Client, kernel: dict[str, Any]
) -> None:
    listed = _api(bob, "GET", "/api/kernels").json()
    got = _api(bob, "GET", f"/api/kernels/{kernel['id']}")
    deleted = _api(bob, "DELETE", f"/api/kernels/{kernel['id']}")
    assert (listed, got.status_code, deleted.status_code) == ([], 404, 404)


def test_interrupt_answers_204(alice: Client, kernel: dict[str, Any]) -> None:
    assert _api(alice, "POST", f"/api/kernels/{kernel['id']}/interrupt").status_code == 204


def _channels(client: Client, kernel_id: str) -> websocket.WebSocket:
    url = client.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    return websocket.create_connection(url, header=_auth(client), timeout=30)


def _run(ws: websocket.WebSocket, code: str, answer: str | None = None) -> list[dict[str, Any]]:
    """Send an execute_request; collect messages until its iopub idle status. Answers an
    input_request with `answer` (sent with no `channel`, as jupyter_server's client does)."""
    messages = Messages()
    request = messages.msg("execute_request", {"code": code, "allow_stdin": True, "silent": False})
    ws.send(json.dumps({**request, "channel": "shell"}, default=str))
    seen: list[dict[str, Any]] = []
    while True:
        msg = json.loads(ws.recv())
        if msg["parent_header"].get("msg_id") != request["header"]["msg_id"]:
            continue
        seen.append(msg)
        if msg["msg_type"] == "input_request" and answer is not None:
            reply = messages.msg("input_reply", {"value": answer}, parent=request["header"])
            ws.send(json.dumps(reply, default=str))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen


def test_channels_websocket_relays_output_and_keeps_state(
    alice: Client, kernel: dict[str, Any]
) -> None:
    ws = _channels(alice, kernel["id"])
    try:
        _run(ws, "x = 6 * 7")
        seen = _run(ws, "print(x)")
    finally:
        ws.close()
    streams = [(m["channel"], m["content"]["text"]) for m in seen if m["msg_type"] == "stream"]
    assert streams == [("iopub", "42\n")]


def _zmq_threads(pid: int) -> list[str]:
    """The names of a process's threads that libzmq started (ZMQbg/IO/0, ZMQbg/Reaper)."""
    names = (task / "comm" for task in Path(f"/proc/{pid}/task").iterdir())
    return [name for name in (path.read_text().strip() for path in names) if "ZMQ" in name]


def test_the_manager_holds_no_kernel_socket_while_it_relays(
    service: Service, alice: Client, kernel: dict[str, Any]
) -> None:
    """The relay goes through the agent: `cogbox serve` itself never opens a zmq socket (no
    libzmq thread), and its dial links to kernels' sockets are gone."""
    assert service.process is not None
    ws = _channels(alice, kernel["id"])
    try:
        seen = _run(ws, "print(6 * 7)")
        threads = _zmq_threads(service.process.pid)
    finally:
        ws.close()
    printed = [m["content"]["text"] for m in seen if m["msg_type"] == "stream"]
    assert (printed, threads) == (["42\n"], [])


def test_channels_websocket_answers_input_over_stdin(alice: Client, kernel: dict[str, Any]) -> None:
    ws = _channels(alice, kernel["id"])
    try:
        seen = _run(ws, "print('hello ' + input('name? '))", answer="ada")
    finally:
        ws.close()
    asked = [m["channel"] for m in seen if m["msg_type"] == "input_request"]
    printed = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
    assert (asked, printed) == (["stdin"], "hello ada\n")


def test_restart_keeps_the_kernel_id_and_drops_variables(
    alice: Client, kernel: dict[str, Any]
) -> None:
    ws = _channels(alice, kernel["id"])
    try:
        _run(ws, "y = 1")
        restarted = _api(alice, "POST", f"/api/kernels/{kernel['id']}/restart")
        seen = _run(ws, "print('y' in dir())")
    finally:
        ws.close()
    printed = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
    assert (restarted.status_code, restarted.json()["id"], printed) == (
        200,
        kernel["id"],
        "False\n",
    )


def test_shutdown_answers_204_and_the_kernel_is_gone(service: Service, alice: Client) -> None:
    started = _api(alice, "POST", "/api/kernels", json={"name": "python3"}).json()
    deleted = _api(alice, "DELETE", f"/api/kernels/{started['id']}")
    after = _api(alice, "GET", f"/api/kernels/{started['id']}")
    assert (deleted.status_code, after.status_code) == (204, 404)
