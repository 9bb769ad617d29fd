"""The native API (/v1): sessions keep state, runs return cogbox events, files, lifecycle."""

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import requests

from cogbox.kernel.events import Event, Finished, Stdout
from cogbox.service.auth import signed_headers
from cogbox.service.client import Endpoint, ServiceClient
from tests.kernel.support import NO_REPLY_ONCE
from tests.service.support import Client, Service, stdout_of


def test_variables_live_from_one_run_to_the_next(alice: Client) -> None:
    ref = alice.create()["id"]
    alice.execute(ref, "x = 6 * 7")
    result = alice.execute(ref, "print(x)")
    assert (stdout_of(result), result["status"]) == ("42\n", "finished/ok")
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_run_events_are_the_kernel_event_model(alice: Client) -> None:
    ref = alice.create()["id"]
    # stdout and stderr are separate streams: flushing one before writing the other fixes
    # the order in which the kernel publishes them.
    code = "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr); 1/0"
    result = alice.execute(ref, code)
    kinds = [e["kind"] for e in result["events"]]
    assert kinds == ["stdout", "stderr", "error", "finished"]
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_time_limit_is_recorded_as_a_session_event(alice: Client) -> None:
    ref = alice.create()["id"]
    result = alice.execute(ref, "import time; time.sleep(30)", timeout=1)
    events = alice.request("GET", f"/v1/sessions/{ref}/events").json()["events"]
    assert result["status"] == "finished/timeout"
    assert ("limit_hit", "exec_timeout") in [(e["kind"], e["reason"]) for e in events]
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_upload_then_download_round_trip(alice: Client) -> None:
    ref = alice.create()["id"]
    put = alice.request(
        "PUT",
        f"/v1/sessions/{ref}/files/content",
        params={"path": "data/in.bin"},
        data=bytes(range(256)),
        headers={"Content-Type": "application/octet-stream"},
    )
    seen = alice.execute(ref, "print(len(open('data/in.bin', 'rb').read()))")
    got = alice.request("GET", f"/v1/sessions/{ref}/files/content", params={"path": "data/in.bin"})
    assert (put.status_code, stdout_of(seen), got.content) == (204, "256\n", bytes(range(256)))
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_download_refuses_paths_out_of_the_work_dir(alice: Client) -> None:
    ref = alice.create()["id"]
    alice.execute(ref, "import os; os.symlink('/etc/shadow', 'link')")
    codes = [
        alice.request("GET", f"/v1/sessions/{ref}/files/content", params={"path": path}).status_code
        for path in ("../../../../etc/passwd", "/etc/passwd", "link")
    ]
    assert codes == [400, 400, 400]
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_restart_keeps_files_and_clears_variables(alice: Client) -> None:
    ref = alice.create()["id"]
    alice.execute(ref, "x = 1; open('kept.txt', 'w').write('yes')")
    restarted = alice.request("POST", f"/v1/sessions/{ref}/restart")
    result = alice.execute(ref, "print(open('kept.txt').read(), 'x' in globals())")
    assert (restarted.status_code, stdout_of(result)) == (200, "yes False\n")
    alice.request("DELETE", f"/v1/sessions/{ref}")


def _wait_until_terminated(alice: Client, ref: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = alice.request("GET", f"/v1/sessions/{ref}").json()
        if info["status"] == "terminated":
            break
        time.sleep(0.5)
    return dict(info)


def _events(alice: Client, ref: str) -> list[dict[str, Any]]:
    return list(alice.request("GET", f"/v1/sessions/{ref}/events").json()["events"])


def test_idle_session_is_reaped_with_an_event(alice: Client) -> None:
    ref = alice.create(idle_timeout=1)["id"]
    info = _wait_until_terminated(alice, ref)
    events = _events(alice, ref)
    assert (info["status"], events[-1]["kind"]) == ("terminated", "idle_reaped")
    assert "idle timeout" in events[-1]["message"]


def test_session_past_its_lifetime_is_ended_with_an_event_even_while_busy(alice: Client) -> None:
    ref = alice.create(max_lifetime=2)["id"]
    alice.execute(ref, "import time; time.sleep(1)")  # in use: the idle timeout never applies
    info = _wait_until_terminated(alice, ref)
    events = _events(alice, ref)
    assert (info["status"], events[-1]["kind"]) == ("terminated", "lifetime_reached")


def test_a_session_records_its_start_and_its_kernels_death(alice: Client) -> None:
    ref = alice.create()["id"]
    alice.execute(ref, "import ctypes; ctypes.string_at(0)")
    kinds = {e["kind"]: e for e in _events(alice, ref)}
    alice.request("DELETE", f"/v1/sessions/{ref}")
    assert "ready" in kinds["running"]["message"]
    assert (kinds["died"]["reason"], kinds["died"]["message"]) == (
        "crashed",
        "crashed: segmentation fault (signal 11, SIGSEGV)",
    )


def test_interrupt_stops_a_running_run_and_the_session_lives(alice: Client) -> None:
    ref = alice.create()["id"]
    results: list[dict[str, Any]] = []
    runner = threading.Thread(
        target=lambda: results.append(alice.execute(ref, "while True: pass")), daemon=True
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not alice.request("GET", f"/v1/sessions/{ref}").json()["busy"]:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    interrupted = alice.request("POST", f"/v1/sessions/{ref}/interrupt")
    runner.join(30)
    after = alice.execute(ref, "print('alive')")
    alice.request("DELETE", f"/v1/sessions/{ref}")
    kinds = [e["kind"] for e in results[0]["events"]]
    assert (interrupted.status_code, kinds[-2:], stdout_of(after)) == (
        204,
        ["error", "finished"],
        "alive\n",
    )
    assert "KeyboardInterrupt" in str(results[0]["events"][-2])


def test_a_run_the_kernel_never_answers_ends_and_the_session_lives(alice: Client) -> None:
    # The agent's streamed path: a request ipykernel ends without a reply (a KeyboardInterrupt
    # outside the code, as a late interrupt gives) must end its run, not hold the session.
    ref = alice.create()["id"]
    alice.execute(ref, "kept = 3")
    alice.execute(ref, NO_REPLY_ONCE)
    unanswered = alice.execute(ref, "print('never')")
    after = alice.execute(ref, "print(kept)")
    alice.request("DELETE", f"/v1/sessions/{ref}")
    finished = unanswered["events"][-1]
    assert (finished["kind"], finished["status"], stdout_of(after)) == ("finished", "error", "3\n")
    assert "without a reply" in finished["message"]


def test_kernel_death_is_explained_and_restart_revives_it(alice: Client) -> None:
    ref = alice.create()["id"]
    result = alice.execute(ref, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    info = alice.request("GET", f"/v1/sessions/{ref}").json()
    alice.request("POST", f"/v1/sessions/{ref}/restart")
    again = alice.execute(ref, "print('back')")
    assert (result["events"][-1]["kind"], info["status"], stdout_of(again)) == (
        "kernel_died",
        "dead",
        "back\n",
    )
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_websocket_streams_events_and_answers_input(alice: Client) -> None:
    ref = alice.create()["id"]
    path = f"/v1/sessions/{ref}/stream"

    async def talk() -> list[dict[str, object]]:
        headers = signed_headers(
            access_key=alice.access_key,
            secret_key=alice.secret_key,
            method="GET",
            path_with_query=path,
            host=alice.url.removeprefix("http://"),
            content_type="application/octet-stream",
        )
        del headers["Content-Type"]
        frames: list[dict[str, object]] = []
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(alice.url + path, headers=headers) as ws,
        ):
            await ws.send_json({"code": "name = input('who? '); print('hi', name)"})
            async for message in ws:
                frame = json.loads(message.data)
                frames.append(frame)
                if frame["kind"] == "input_request":
                    await ws.send_json({"input": "ada"})
                if frame["kind"] == "finished":
                    break
        return frames

    frames = asyncio.run(talk())
    assert [f["kind"] for f in frames] == ["input_request", "stdout", "finished"]
    assert frames[1]["text"] == "hi ada\n"
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_openapi_document_is_served_unsigned(service: Service) -> None:
    document = requests.get(service.url + "/openapi.json", timeout=10).json()
    assert "/v1/sessions/{ref}/execute" in document["paths"]


def test_websocket_batch_frame_streams_the_command_and_its_exit_status(alice: Client) -> None:
    ref = alice.create()["id"]

    async def talk() -> list[Event]:
        endpoint = Endpoint(alice.url, alice.access_key, alice.secret_key)
        async with ServiceClient(endpoint) as client:
            return [e async for e in client.execute_batch(ref, 'echo "$PWD"; exit 4')]

    events = asyncio.run(talk())
    assert events == [Stdout("/home/work\n"), Finished("error", None, events[-1].message, 4)]
    alice.request("DELETE", f"/v1/sessions/{ref}")
