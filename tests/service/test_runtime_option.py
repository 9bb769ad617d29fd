"""A session created with `runtime: runsc` (native API) runs under gVisor, the seed's
snippets included; an unknown runtime is refused by name, before anything starts.

Needs the kernel side of issue 9 (`start_session(runtime=...)`): before it, the runsc case
fails at the session's start (503)."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.seed import CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND
from tests.service.support import Client, running_service, stdout_of

# gVisor's Sentry reports this kernel release to the code it runs (the host's differs).
GVISOR_RELEASE = "4.4.0"
RELEASE = "import platform\nprint(platform.release())"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    directory: Path = tmp_path_factory.mktemp("runtime")
    with running_service(directory, "--pool", "python=0") as service:
        yield service.keypair()


@pytest.mark.parametrize(
    ("image", "snippet", "expected"),
    [
        ("python", HELLO_WORLD, "hello world\n"),
        ("cntk", CNTK_SQUARED_ERROR, "[ 29.]"),
        ("keras", KERAS_BACKEND, "keras\n"),
    ],
    ids=["hello-world", "cntk-squared-error", "keras-backend"],
)
def test_a_runsc_session_runs_the_seed_snippets_under_gvisor(
    client: Client,
    python_image: Image,
    cntk_image: Image,
    keras_image: Image,
    image: str,
    snippet: str,
    expected: str,
) -> None:
    if shutil.which("runsc") is None:
        pytest.skip("runsc (gVisor) is not installed")
    ref = client.create(image, runtime="runsc")["id"]
    try:
        release = stdout_of(client.execute(ref, RELEASE)).strip()
        assert release == GVISOR_RELEASE
        assert expected in stdout_of(client.execute(ref, snippet))
    finally:
        client.request("DELETE", f"/v1/sessions/{ref}")


def test_an_unknown_runtime_is_refused_by_name(client: Client, python_image: Image) -> None:
    before = client.request("GET", "/v1/sessions").json()["sessions"]
    response = client.request("POST", "/v1/sessions", json={"image": "python", "runtime": "kata"})
    assert response.status_code == 400
    assert "'runtime'" in response.json()["title"]
    assert client.request("GET", "/v1/sessions").json()["sessions"] == before


def test_runc_stays_the_default(client: Client, python_image: Image) -> None:
    ref = client.create("python")["id"]
    try:
        assert stdout_of(client.execute(ref, RELEASE)).strip() != GVISOR_RELEASE
    finally:
        client.request("DELETE", f"/v1/sessions/{ref}")
