"""What the manager reads from the shared folder a Slurm job's agent writes to (its
agent.address) is proven first: the folders must be real folders of this user that no one
else can write, so a planted link or an open folder is refused before anything is opened.

Attack family: the host following or trusting a path someone else can plant."""

import os
from pathlib import Path

import pytest

from cogbox.agent.errors import AgentAuthError
from cogbox.cluster.slurm_agent import _own_private_folder


def test_a_private_folder_of_this_user_is_accepted(tmp_path: Path) -> None:
    _own_private_folder(tmp_path / "state", create=True)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_a_link_planted_as_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AgentAuthError, match="not a private folder"):
        _own_private_folder(tmp_path / "state")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    os.chmod(folder, mode)
    with pytest.raises(AgentAuthError, match="not a private folder"):
        _own_private_folder(folder)


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(AgentAuthError, match="not a private folder"):
        _own_private_folder(folder)
