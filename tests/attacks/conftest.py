"""Fixtures of the attack suite: a neighbouring jail, fresh work directories, cntk's policy."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.policy import Policy, load_policy
from tests.attacks.harness import Neighbour


@pytest.fixture
def neighbour(python_image: Image) -> Iterator[Neighbour]:
    """A long-running second jail; the test calls `neighbour.assert_answers()` at its end."""
    running = Neighbour(python_image)
    try:
        yield running
    finally:
        running.stop()


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
