"""Fixtures of the attack suite: a neighbouring jail, fresh work directories, cntk's policy.

Every case, whatever it attacks, ends with the same checks (`host_and_neighbour_unaffected`):
the neighbouring jail still runs, its files are intact and it still makes progress; the
host's key files and a canary are unchanged; and no process of the case's jails is left.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.policy import Policy, load_policy
from tests.attacks.harness import HostCanary, Neighbour, driven_by_other_processes, running_jails


@pytest.fixture(scope="module")
def neighbour(python_image: Image) -> Iterator[Neighbour]:
    """A second jail running next to every case of the module."""
    running = Neighbour(python_image)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostCanary:
    return HostCanary(tmp_path_factory.mktemp("host"))


@pytest.fixture(autouse=True)
def host_and_neighbour_unaffected(neighbour: Neighbour, host: HostCanary) -> Iterator[None]:
    before = running_jails()
    yield
    neighbour.assert_answers()
    host.assert_unchanged()
    left = running_jails() - before
    left -= driven_by_other_processes(left)  # on a shared host, other runs start jails too
    assert not left, f"jails of this case still run processes: {sorted(left)}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh host directory for /home/work, owned by the jail's user like a real session's."""
    path = tmp_path / "work"
    path.mkdir()
    os.chown(path, 1000, 1000)
    return path


@pytest.fixture
def cntk_policy(cntk_image: Image) -> Policy:
    """The cntk image's own policy, exactly as the image ships it."""
    return load_policy(cntk_image.policy_path)
