"""Memory: a session may ask for its own memory limit, the jail enforces it, and a keypair's
`--max-memory` caps what its sessions hold together (429 naming the figures)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cogbox.cli.keypair import keypair
from cogbox.images.store import Image
from cogbox.jail.policy import load_policy
from tests.service.support import Service, running_service


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service"), "--pool", "python=0") as running:
        yield running


@pytest.fixture(scope="module")
def image_memory(python_image: Image) -> int:
    return load_policy(python_image.policy_path).limits.memory_bytes


def test_a_session_has_the_image_policys_memory_by_default(
    service: Service, image_memory: int
) -> None:
    alice = service.keypair()
    created = alice.create()
    alice.request("DELETE", f"/v1/sessions/{created['id']}")
    assert created["memory_bytes"] == image_memory


def test_a_session_asking_for_less_memory_is_killed_past_it_and_told_so(service: Service) -> None:
    alice = service.keypair()
    created = alice.create(memory="128m")
    try:
        result = alice.execute(
            created["id"], "x = bytearray(400 << 20); x[::4096] = b'x' * len(x[::4096])"
        )
        last = result["events"][-1]
        assert created["memory_bytes"] == 128 << 20
        assert (last["kind"], last["reason"]) == ("kernel_died", "oom"), result
    finally:
        alice.request("DELETE", f"/v1/sessions/{created['id']}")


def test_memory_that_is_not_a_size_is_a_400(service: Service) -> None:
    alice = service.keypair()
    codes = [
        alice.request("POST", "/v1/sessions", json={"image": "python", "memory": m}).status_code
        for m in ("lots", "1k", -5)
    ]
    assert codes == [400, 400, 400]


def test_a_keypairs_memory_cap_refuses_the_session_that_would_pass_it(
    service: Service, image_memory: int
) -> None:
    cap = image_memory + (512 << 20)
    alice = service.keypair("--max-memory", str(cap))
    first = alice.create()
    try:
        refused = alice.request("POST", "/v1/sessions", json={"image": "python"})
        body = refused.json()
        assert (refused.status_code, body["error"]) == (429, "memory-limit"), body
        assert "its 1 active session holds" in body["msg"], body
        small = alice.create(memory="512m")  # exactly what is left
        alice.request("DELETE", f"/v1/sessions/{small['id']}")
    finally:
        alice.request("DELETE", f"/v1/sessions/{first['id']}")
    again = alice.create()  # the cap counts active sessions only
    alice.request("DELETE", f"/v1/sessions/{again['id']}")
    assert again["status"] == "running"


def test_keypair_cli_takes_and_lists_a_memory_cap(tmp_path: Path) -> None:
    env = {"COGBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'cogbox.db'}"}
    made = CliRunner().invoke(keypair, ["create", "--json", "--max-memory", "6g"], env=env)
    bad = CliRunner().invoke(keypair, ["create", "--max-memory", "plenty"], env=env)
    listed = CliRunner().invoke(keypair, ["ls"], env=env)
    assert json.loads(made.output)["max_memory_bytes"] == 6 << 30
    assert bad.exit_code == 2 and "'plenty' is not a size" in bad.output
    assert "max_memory=6.0 GiB" in listed.output


def test_backendai_clients_resources_mem_sets_the_sessions_memory(service: Service) -> None:
    # `backend.ai run -r mem=256m` sends it as config.resources.mem.
    alice = service.keypair()
    body = {"image": "python", "config": {"resources": {"mem": "256m"}}}
    created = alice.request("POST", "/session", json=body)
    assert created.status_code == 201, created.text
    ref = created.json()["sessionId"]
    info = alice.request("GET", f"/v1/sessions/{ref}").json()
    alice.request("DELETE", f"/v1/sessions/{ref}")
    bad = alice.request("POST", "/session", json={**body, "config": {"resources": {"mem": "x"}}})
    assert info["memory_bytes"] == 256 << 20
    assert bad.status_code == 400 and "config.resources.mem" in bad.json()["msg"]
