"""Sessions of the service are handed pre-started kernels from a warm pool when one is ready.

The service runs with `--pool python=2`. A pooled kernel has its own /home/work, which the
session keeps: its files outlive the kernel and a restart of the service like any other's.
"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cogbox.cli.serve import serve
from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service, stdout_of

POOL = 2


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("service")
    # A folder a killed run left behind: a pooled kernel's that no session ever got.
    (directory / "sessions" / "pool-0123456789abcdef" / "home").mkdir(parents=True)
    with running_service(directory, "--pool", f"python={POOL}") as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


def _pool_folders(service: Service) -> list[Path]:
    return sorted((service.directory / "sessions").glob("pool-*"))


def _ready(alice: Client) -> int:
    pools = alice.request("GET", "/v1/pools").json()["pools"]
    return int(next(p["ready"] for p in pools if p["image"] == "python"))


def _wait_for_full_pool(alice: Client) -> None:
    deadline = time.monotonic() + 60
    while _ready(alice) < POOL and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ready(alice) == POOL


def _started(alice: Client, ref: str) -> str:
    events = alice.request("GET", f"/v1/sessions/{ref}/events").json()["events"]
    return str(next(e["message"] for e in events if e["kind"] == "running"))


def test_a_killed_runs_unused_pool_folders_are_removed_at_start(service: Service) -> None:
    assert service.directory / "sessions" / "pool-0123456789abcdef" not in _pool_folders(service)


def test_a_new_session_gets_a_pooled_kernel_and_the_pool_refills(
    service: Service, alice: Client
) -> None:
    _wait_for_full_pool(alice)
    created = alice.create()
    try:
        assert "from the warm pool" in _started(alice, created["id"])
        assert stdout_of(alice.execute(created["id"], "print(6 * 7)")) == "42\n"
        _wait_for_full_pool(alice)
        # The session keeps its pooled kernel's folder; the pool made new ones.
        assert len(_pool_folders(service)) == POOL + 1
    finally:
        alice.request("DELETE", f"/v1/sessions/{created['id']}")


def test_pooled_kernels_are_never_shared(alice: Client) -> None:
    _wait_for_full_pool(alice)
    first, second = alice.create(), alice.create()
    try:
        alice.execute(first["id"], "secret = 42; open('mine.txt', 'w').write('first')")
        probe = "import os; print('secret' in dir(), os.path.exists('mine.txt'))"
        assert stdout_of(alice.execute(second["id"], probe)) == "False False\n"
        assert all("from the warm pool" in _started(alice, s["id"]) for s in (first, second))
    finally:
        for session in (first, second):
            alice.request("DELETE", f"/v1/sessions/{session['id']}")


def test_a_session_with_its_own_environment_starts_cold(alice: Client) -> None:
    # A key the image's policy preserves: the others never reach a kernel.
    created = alice.create(env={"OPENBLAS_NUM_THREADS": "3"})
    try:
        assert "warm pool" not in _started(alice, created["id"])
        code = "import os; print(os.environ['OPENBLAS_NUM_THREADS'])"
        assert stdout_of(alice.execute(created["id"], code)) == "3\n"
    finally:
        alice.request("DELETE", f"/v1/sessions/{created['id']}")


def _download(alice: Client, ref: str, path: str) -> Any:
    return alice.request("GET", f"/v1/sessions/{ref}/files/content", params={"path": path})


def test_a_pooled_sessions_files_survive_a_restart_of_the_service(
    service: Service, alice: Client
) -> None:
    _wait_for_full_pool(alice)
    created = alice.create()
    assert "from the warm pool" in _started(alice, created["id"])
    alice.execute(created["id"], "open('kept.txt', 'w').write('still here')")
    service.stop()
    service.start("--pool", f"python={POOL}")
    record = alice.request("GET", f"/v1/sessions/{created['id']}").json()
    got = _download(alice, created["id"], "kept.txt")
    assert (record["status"], got.status_code, got.text) == ("lost", 200, "still here")


def test_a_pool_option_that_is_not_image_equals_count_is_refused_naming_it() -> None:
    for bad in ("cntk", "cntk=two", "=1"):
        result = CliRunner().invoke(serve, ["--pool", bad])
        assert result.exit_code == 2 and f"'{bad}': use IMAGE=N" in result.output, result.output
