"""Attack family "service input": what a tenant sends the service (bodies, downloads, names,
GraphQL variables, multipart parts) must neither grow the service's memory without bound nor
give a 5xx, and no error body or log line may name a host path or a secret.

Every case goes through a real `cogbox serve` process (`tests/service/support.py`) and is
judged from the host side: the service's RSS peak from /proc/<pid>/status (VmHWM, reset
through /proc/<pid>/clear_refs before each measured transfer), the status and body of its
answers, its log, and the latency of another tenant's requests meanwhile.
"""

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.store import Image
from tests.attacks.harness import HostCanary, Neighbour
from tests.service.support import SERVE, Client, Service, free_port, running_service, stdout_of

MIB = 1 << 20
# The service may use this much more memory than before a transfer while it runs: a few
# chunks in flight, never a file or a body.
RSS_GROWTH_LIMIT = 64 * MIB
BIG_FILE = "big.bin"
BIG_SIZE = 64 * MIB


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("service-input")
    with running_service(directory, "--pool", "python=0", "--pool", "cntk=0") as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


@pytest.fixture(scope="module")
def bob(service: Service) -> Client:
    return service.keypair()


@pytest.fixture(scope="module")
def session(alice: Client) -> Iterator[str]:
    """A python session holding a 64 MiB file its own code wrote."""
    ref = alice.create(name="input-attacks")["id"]
    made = alice.execute(
        ref,
        f"with open({BIG_FILE!r}, 'wb') as f:\n"
        f"    for _ in range({BIG_SIZE // MIB}): f.write(b'z' * {MIB})\n"
        f"print(__import__('os').path.getsize({BIG_FILE!r}))",
    )
    assert stdout_of(made) == f"{BIG_SIZE}\n", made
    yield ref
    alice.request("DELETE", f"/v1/sessions/{ref}")


def _active_sessions(*clients: Client) -> set[str]:
    found = set()
    for client in clients:
        for listed in client.request("GET", "/v1/sessions").json()["sessions"]:
            if listed["status"] in ("building", "starting", "running", "dead"):
                found.add(listed["id"])
    return found


@pytest.fixture(autouse=True)
def host_and_neighbour_unaffected(
    neighbour: Neighbour, host: HostCanary, alice: Client, bob: Client
) -> Iterator[None]:
    """The suite's after-case checks (tests/attacks/conftest.py), with the sessions a case
    leaves judged by the service rather than by every jail on the host: other engineers'
    and CI jobs' jails come and go on a shared machine."""
    before = _active_sessions(alice, bob)
    yield
    neighbour.assert_answers()
    host.assert_unchanged()
    left = _active_sessions(alice, bob) - before
    assert not left, f"sessions this case made still run: {sorted(left)}"


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakGrowth:
    """How far the service's resident memory rose above its level at the start (bytes)."""

    def __init__(self, service: Service) -> None:
        assert service.process is not None
        self.pid = service.process.pid

    def __enter__(self) -> "PeakGrowth":
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.start = _status_kib(self.pid, "VmRSS")
        self.growth = 0
        return self

    def __exit__(self, *_: object) -> None:
        self.growth = (_status_kib(self.pid, "VmHWM") - self.start) * 1024


def _problem(response: requests.Response) -> dict[str, Any]:
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.status_code,
        response.text[:300],
    )
    body = response.json()
    assert isinstance(body, dict) and {"error", "status", "msg"} <= body.keys(), body
    return body


def _chunks(size: int, chunk: bytes = b"x" * MIB) -> Iterator[bytes]:
    for _ in range(size // len(chunk)):
        yield chunk


# ------------------------------------------------------------------ downloads (finding 4a)


def test_download_of_one_64mib_file_named_12_times_streams(
    service: Service, alice: Client, session: str
) -> None:
    received = 0
    with PeakGrowth(service) as peak:
        response = alice.request(
            "GET", f"/session/{session}/download", json={"files": [BIG_FILE] * 12}, stream=True
        )
        for chunk in response.iter_content(MIB):
            received += len(chunk)
    assert (response.status_code, received > 12 * BIG_SIZE) == (200, True)
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def test_download_parts_are_tar_files_of_the_named_files(alice: Client, session: str) -> None:
    import io
    import tarfile
    from email.parser import BytesParser

    made = alice.execute(
        session, "open('a.txt', 'w').write('alpha'); open('b.txt', 'w').write('b')"
    )
    assert made["status"] == "finished/ok", made
    response = alice.request(
        "GET", f"/session/{session}/download", json={"files": ["a.txt", "/home/work/b.txt"]}
    )
    message = BytesParser().parsebytes(
        b"Content-Type: "
        + response.headers["Content-Type"].encode()
        + b"\r\n\r\n"
        + response.content
    )
    contents = []
    for part in message.get_payload():
        with tarfile.open(fileobj=io.BytesIO(part.get_payload(decode=True))) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member)
                assert extracted is not None
                contents.append((member.name, extracted.read()))
    assert contents == [("a.txt", b"alpha"), ("b.txt", b"b")]


def test_download_of_too_many_files_is_refused_naming_the_limit(
    alice: Client, session: str
) -> None:
    response = alice.request(
        "GET", f"/session/{session}/download", json={"files": ["a.txt"] * 10_000}
    )
    body = _problem(response)
    assert (response.status_code, "'files'" in body["msg"]) == (400, True), body


def test_native_download_of_a_64mib_file_streams(
    service: Service, alice: Client, session: str
) -> None:
    received = 0
    with PeakGrowth(service) as peak:
        response = alice.request(
            "GET",
            f"/v1/sessions/{session}/files/content",
            params={"path": BIG_FILE},
            stream=True,
        )
        for chunk in response.iter_content(MIB):
            received += len(chunk)
    assert (response.status_code, received) == (200, BIG_SIZE)
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


# ------------------------------------------------------------------ request bodies (4c)


def test_three_100mib_json_bodies_are_refused_413_without_growing_the_service(
    service: Service, alice: Client, session: str
) -> None:
    body = b'{"code": "' + b"x" * (100 * MIB) + b'"}'
    paths = ["/v1/sessions", "/session", f"/v1/sessions/{session}/execute"]
    answers: list[requests.Response] = []

    def send(path: str) -> None:
        headers = {"Content-Type": "application/json"}
        answers.append(alice.request("POST", path, data=body, headers=headers))

    with PeakGrowth(service) as peak:
        threads = [threading.Thread(target=send, args=(path,)) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    problems = [(a.status_code, "1 MiB" in _problem(a)["msg"]) for a in answers]
    assert problems == [(413, True)] * 3, [a.text[:200] for a in answers]
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def test_chunked_json_body_without_length_is_cut_off_at_the_limit(
    service: Service, alice: Client
) -> None:
    with PeakGrowth(service) as peak:
        response = alice.request(
            "POST",
            "/admin/gql",
            data=_chunks(64 * MIB),
            headers={"Content-Type": "application/json"},
        )
    assert (response.status_code, _problem(response)["error"]) == (413, "too-large")
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def _multipart(boundary: str, disposition: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def _size_in_session(alice: Client, session: str, name: str) -> str:
    return stdout_of(alice.execute(session, f"print(__import__('os').path.getsize({name!r}))"))


def test_backendai_upload_of_160mib_streams_to_the_work_dir(
    service: Service, alice: Client, session: str
) -> None:
    boundary = "cogbox-test-boundary"
    with PeakGrowth(service) as peak:
        response = alice.request(
            "POST",
            f"/session/{session}/upload",
            data=_multipart(
                boundary, 'form-data; name="src"; filename="up.bin"', _chunks(160 * MIB)
            ),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 200, response.text
    assert _size_in_session(alice, session, "up.bin") == f"{160 * MIB}\n"
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def test_native_upload_of_160mib_streams_to_the_work_dir(
    service: Service, alice: Client, session: str
) -> None:
    with PeakGrowth(service) as peak:
        response = alice.request(
            "PUT",
            f"/v1/sessions/{session}/files/content",
            params={"path": "put.bin"},
            data=_chunks(160 * MIB),
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code == 204, response.text
    assert _size_in_session(alice, session, "put.bin") == f"{160 * MIB}\n"
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def test_upload_past_the_per_file_cap_is_refused_413_and_leaves_no_file(
    service: Service, alice: Client, session: str
) -> None:
    with PeakGrowth(service) as peak:
        response = alice.request(
            "PUT",
            f"/v1/sessions/{session}/files/content",
            params={"path": "huge.bin"},
            data=_chunks(257 * MIB),  # chunked: no Content-Length to refuse it early
            headers={"Content-Type": "application/octet-stream"},
        )
    left = stdout_of(alice.execute(session, "import os; print(sorted(os.listdir('.')))"))
    assert (response.status_code, "256 MiB" in _problem(response)["msg"]) == (413, True)
    assert ("huge.bin" in left, ".cogbox-upload" in left) == (False, False), left
    assert peak.growth < RSS_GROWTH_LIMIT, f"the service grew by {peak.growth / MIB:.0f} MiB"


def test_download_abandoned_mid_file_closes_it_and_logs_no_error(
    service: Service, alice: Client, session: str
) -> None:
    assert service.process is not None
    log = service.directory / "service.log"
    start = log.stat().st_size
    for path, options in [
        (f"/session/{session}/download", {"json": {"files": [BIG_FILE] * 3}}),
        (f"/v1/sessions/{session}/files/content", {"params": {"path": BIG_FILE}}),
    ]:
        response = alice.request("GET", path, stream=True, **options)
        next(response.iter_content(MIB))
        response.close()  # the client goes away mid-file
    fds = Path(f"/proc/{service.process.pid}/fd")
    deadline = time.monotonic() + 10
    while True:
        held = [link for link in fds.iterdir() if BIG_FILE in os.path.realpath(link)]
        if not held or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    with log.open("rb") as written:
        written.seek(start)
        lines = written.read().decode(errors="replace")
    assert (held, "unexpected error" in lines) == ([], False), lines[-2000:]


def test_service_answers_another_tenant_during_a_large_download(
    alice: Client, bob: Client, session: str
) -> None:
    done = threading.Event()

    def slow_download() -> None:
        response = alice.request(
            "GET", f"/session/{session}/download", json={"files": [BIG_FILE] * 4}, stream=True
        )
        for _ in response.iter_content(MIB):
            time.sleep(0.002)  # a client that reads slowly
        done.set()

    downloader = threading.Thread(target=slow_download)
    downloader.start()
    time.sleep(0.5)
    rounds = []
    while not done.is_set() and len(rounds) < 20:
        start = time.monotonic()
        answer = bob.request("GET", "/v1/sessions")
        rounds.append((answer.status_code, time.monotonic() - start))
        time.sleep(0.05)
    downloader.join()
    assert rounds and all(status == 200 for status, _ in rounds), rounds
    assert max(seconds for _, seconds in rounds) < 0.5, rounds


# ------------------------------------------------------------------ no 5xx from input (6)


_NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/session"),
        ("POST", "/session/{ref}"),
        ("GET", "/session/{ref}/download"),
        ("GET", "/session/{ref}/files"),
        ("POST", "/admin/gql"),
        ("POST", "/v1/sessions"),
        ("POST", "/v1/sessions/{ref}/execute"),
        ("POST", "/v1/sessions/{ref}/batch"),
    ],
)
def test_deeply_nested_json_is_a_400_naming_the_body(
    alice: Client, session: str, method: str, path: str
) -> None:
    response = alice.request(
        method,
        path.format(ref=session),
        data=_NESTED,
        headers={"Content-Type": "application/json"},
    )
    body = _problem(response)
    assert (response.status_code, "nested" in body["msg"]) == (400, True), body


@pytest.mark.parametrize(
    "variables",
    [{"limit": "ten"}, {"offset": [1]}, {"limit": -1}, {"status": 5}, {"limit": 1.5}],
    ids=["limit-str", "offset-list", "limit-negative", "status-int", "limit-float"],
)
def test_graphql_variables_of_the_wrong_type_are_a_400_naming_them(
    alice: Client, variables: dict[str, Any]
) -> None:
    query = "query($limit: Int, $offset: Int) { compute_session_list { items { id } } }"
    response = alice.request("POST", "/admin/gql", json={"query": query, "variables": variables})
    body = _problem(response)
    name = next(iter(variables))
    assert (response.status_code, f"'variables.{name}'" in body["msg"]) == (400, True), body


def test_graphql_query_of_spaces_is_answered_at_once(alice: Client, bob: Client) -> None:
    start = time.monotonic()
    response = alice.request("POST", "/admin/gql", json={"query": " " * 200_000 + "x"}, timeout=10)
    seconds = time.monotonic() - start
    other = bob.request("GET", "/v1/sessions", timeout=10)
    # A 400 naming the unsupported query (no GraphQL error-as-200), and at once.
    assert (response.status_code, other.status_code, seconds < 2) == (400, 200, True), seconds


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [
        ("multipart/form-data; boundary=B", "form-data; name=\"src\"; filename*=utf-8''a%00b"),
        ("multipart/form-data; boundary=B", "form-data; name=\"src\"; filename*=utf-8''a%0Ab"),
        ("multipart/form-data; boundary=B", 'form-data; name="src"; filename="a\rb"'),
        ("multipart/form-data; boundary=B", 'form-data; name="src"; filename=""'),
        ("multipart/form-data", 'form-data; name="src"; filename="ok.txt"'),
        ("multipart/form-data; boundary=", 'form-data; name="src"; filename="ok.txt"'),
    ],
    ids=["nul", "newline", "carriage-return", "empty", "no-boundary", "empty-boundary"],
)
def test_bad_multipart_upload_is_a_400_naming_the_part(
    alice: Client, session: str, content_type: str, disposition: str
) -> None:
    data = b"".join(_multipart("B", disposition, iter([b"hello"])))
    response = alice.request(
        "POST", f"/session/{session}/upload", data=data, headers={"Content-Type": content_type}
    )
    body = _problem(response)
    assert (response.status_code, "'src'" in body["msg"]) == (400, True), body


_WRONG_TYPES = [
    ("POST", "/session", {"image": 5}),
    ("POST", "/session", {"image": "python", "name": 5}),
    ("POST", "/session", {"image": "python", "config": []}),
    ("POST", "/session", {"image": "python", "config": {"environ": []}}),
    ("POST", "/session", {"image": "python", "config": {"environ": {"A": {"b": 1}}}}),
    ("POST", "/session", {"image": "python", "config": {"resources": "x"}}),
    ("POST", "/session", {"image": "python", "config": {"resources": {"mem": {}}}}),
    ("POST", "/session", {"image": ["python"]}),
    ("POST", "/session/{ref}", {"mode": 5, "code": "1"}),
    ("POST", "/session/{ref}", {"mode": "query", "code": {}}),
    ("POST", "/session/{ref}", {"mode": "query", "code": "1", "runId": 5}),
    ("POST", "/session/{ref}", {"mode": "batch", "options": []}),
    ("POST", "/session/{ref}", {"mode": "continue", "runId": "nope"}),
    ("GET", "/session/{ref}/download", {"files": "big.bin"}),
    ("GET", "/session/{ref}/download", {"files": [5]}),
    ("GET", "/session/{ref}/download", {"files": ["../../etc/passwd"]}),
    ("GET", "/session/{ref}/download", {"files": ["a\u0000b"]}),
    ("GET", "/session/{ref}/files", {"path": 5}),
    ("GET", "/session/{ref}/files", {"path": "a\u0000b"}),
    ("GET", "/session/{ref}/files", {"path": "/etc"}),
    ("POST", "/admin/gql", {"query": 5}),
    ("POST", "/admin/gql", {"query": "{ keypair { access_key } }", "variables": []}),
    ("POST", "/admin/gql", {"query": "query(" * 1000}),
    ("POST", "/v1/sessions", {"image": "python", "env": {"A": 5}}),
    ("POST", "/v1/sessions", {"image": "python", "idle_timeout": "soon"}),
    ("POST", "/v1/sessions/{ref}/execute", {"code": "1", "timeout": []}),
]


@pytest.mark.parametrize(("method", "path", "body"), _WRONG_TYPES)
def test_fields_of_the_wrong_type_are_a_4xx_problem(
    alice: Client, session: str, method: str, path: str, body: Any
) -> None:
    response = alice.request(method, path.format(ref=session), json=body)
    if response.ok and path == "/session":
        alice.request("DELETE", f"/session/{response.json()['sessionId']}")
    if path == "/admin/gql" and response.ok:  # GraphQL's own errors come as a 200
        assert response.json()["errors"], response.text
        return
    problem = _problem(response)
    assert 400 <= response.status_code < 500, problem


# ------------------------------------------------------------------ names (7)


@pytest.mark.parametrize("name", ["abcd\n", "abcd\r\n", "\nabcd"])
def test_session_name_with_a_newline_is_refused_naming_it(alice: Client, name: str) -> None:
    native = alice.request("POST", "/v1/sessions", json={"image": "python", "name": name})
    backendai = alice.request("POST", "/session", json={"image": "python", "name": name})
    statuses = [(r.status_code, "session name" in _problem(r)["msg"]) for r in (native, backendai)]
    assert statuses == [(400, True), (400, True)], [native.text, backendai.text]


# ------------------------------------------------------------------ disclosure (8)


def _host_paths(service: Service) -> list[str]:
    return [
        str(service.directory),
        str(REPO_IMAGES_DIR),
        str(REPO_IMAGES_DIR.parent),
        "/var/lib/cogbox",
        "/run/cogbox/s/",
    ]


def test_image_not_found_names_no_host_path(service: Service, alice: Client) -> None:
    native = alice.request("POST", "/v1/sessions", json={"image": "no-such-image"})
    backendai = alice.request("POST", "/session", json={"image": "no-such-image"})
    texts = native.text + backendai.text
    leaked = [path for path in _host_paths(service) if path in texts]
    assert (native.status_code, backendai.status_code, leaked) == (404, 404, []), texts


# The kernel starts as `python -m ipykernel_launcher` in /home/work, so a module of that name
# there shadows ipykernel's and the next kernel exits while starting: a restart that fails.
_BREAK_THE_NEXT_KERNEL = (
    "open('/home/work/ipykernel_launcher.py', 'w').write('import sys; sys.exit(7)')"
)


def test_restart_error_names_no_host_path(service: Service, alice: Client) -> None:
    ref = alice.create(name="restart-breaker")["id"]
    planted = alice.execute(ref, _BREAK_THE_NEXT_KERNEL)
    restart = alice.request("POST", f"/v1/sessions/{ref}/restart")
    events = alice.request("GET", f"/v1/sessions/{ref}/events")
    alice.request("DELETE", f"/v1/sessions/{ref}")
    texts = restart.text + events.text
    leaked = [path for path in _host_paths(service) if path in texts]
    assert planted["status"] == "finished/ok", planted
    assert (restart.status_code < 500, leaked) == (True, []), texts


def test_execute_after_a_failed_restart_says_the_session_is_dead(alice: Client) -> None:
    ref = alice.create(name="restart-then-run")["id"]
    alice.execute(ref, _BREAK_THE_NEXT_KERNEL)
    restart = alice.request("POST", f"/v1/sessions/{ref}/restart")
    run = alice.request("POST", f"/v1/sessions/{ref}/execute", json={"code": "1"})
    state = alice.request("GET", f"/v1/sessions/{ref}").json()
    alice.request("DELETE", f"/v1/sessions/{ref}")
    assert not restart.ok, restart.text
    assert (run.status_code, "restart" in _problem(run)["msg"], state["status"]) == (
        409,
        True,
        "dead",
    ), run.text


def test_serve_never_prints_the_database_password(tmp_path: Path) -> None:
    import subprocess

    password = "s3cret-pw-" + os.urandom(4).hex()
    url = f"postgresql+psycopg://cogbox:{password}@127.0.0.1:9/cogbox"
    env = {**os.environ, "COGBOX_DATABASE_URL": url, "COGBOX_SERVICE_DIR": str(tmp_path)}
    ended = subprocess.run(
        [*SERVE, "--port", str(free_port()), "--pool", "python=0", "--pool", "cntk=0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = ended.stdout + ended.stderr
    assert ("127.0.0.1:9" in log, password in log) == (True, False), log[-2000:]


def test_problem_bodies_are_json_for_unknown_routes_and_methods(alice: Client) -> None:
    answers = [
        alice.request("GET", "/no/such/route"),
        alice.request("PUT", "/session"),
    ]
    assert [(a.status_code, _problem(a)["status"]) for a in answers] == [(404, 404), (405, 405)]


def test_problem_bodies_say_which_field_is_wrong_in_native_bodies(alice: Client) -> None:
    response = alice.request("POST", "/v1/sessions", json={"image": "python", "memory": [1]})
    body = _problem(response)
    assert (response.status_code, "memory" in body["msg"]) == (400, True), json.dumps(body)


# ------------------------------------------------------------------ WebSocket frames


def _log_since(service: Service, start: int) -> str:
    with (service.directory / "service.log").open("rb") as written:
        written.seek(start)
        return written.read().decode(errors="replace")


def test_deeply_nested_websocket_frames_are_refused_on_every_stream(
    service: Service, alice: Client, session: str
) -> None:
    from tests.attacks.stream_clients import (
        backendai_stream,
        execute_request,
        jupyter_channels,
        native_stream,
    )

    start = (service.directory / "service.log").stat().st_size
    native = native_stream(alice, session, timeout=30)
    native.send(_NESTED)
    native_answer = json.loads(native.recv())
    native.send(json.dumps({"code": "print(6 * 7)"}))
    native_after = [json.loads(native.recv()) for _ in range(2)]
    native.close()

    backendai = backendai_stream(alice, session, timeout=30)
    backendai.send(_NESTED)
    backendai_answer = json.loads(backendai.recv())
    backendai.close()

    channels = jupyter_channels(alice, session, timeout=30)
    channels.send(_NESTED)
    request = execute_request("print(6 * 7)")
    channels.send(request)
    msg_id = json.loads(request)["header"]["msg_id"]
    outputs: list[dict[str, Any]] = []
    # Done once the kernel is idle after this run: iopub's output and shell's reply come in
    # any order, and the relay's own kernel_info nudges have status messages of their own.
    while not any(o["content"].get("execution_state") == "idle" for o in outputs):
        message = json.loads(channels.recv())
        if message["parent_header"].get("msg_id") == msg_id:
            outputs.append({"msg_type": message["msg_type"], "content": message["content"]})
    channels.close()

    log = _log_since(service, start)
    assert (native_answer["kind"], "nested" in native_answer["msg"]) == ("problem", True)
    assert any(e.get("text") == "42\n" for e in native_after), native_after
    assert "nested" in backendai_answer["console"][0][1], backendai_answer
    assert any(o["content"].get("text") == "42\n" for o in outputs), outputs
    assert ("Traceback" in log, "RecursionError" in log) == (False, False), log[-3000:]
