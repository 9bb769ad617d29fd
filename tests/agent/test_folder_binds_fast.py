"""Storage folders cross the agent seam by id, never as host paths: the agent binds only a
mounted filesystem at `<its folders root>/<uuid>/mnt`. A manager (or a forged spec) naming
anything else gets a KernelError before any jail is made.

Attack family: bugs in the service's own API (a spec that names a host path to bind)."""

import os
import subprocess
from pathlib import Path

import pytest

from cogbox.agent.local import LocalAgent
from cogbox.kernel.errors import KernelError
from cogbox.service.agent import FolderBind

FOLDER = "0b6f3a52-6c1e-4f3e-9d51-5c0f5a3e9a10"


def binds(root: Path, folder: str) -> object:
    return LocalAgent(folders=root)._binds([FolderBind(folder, "/home/work/data", readonly=False)])


@pytest.mark.parametrize("folder", ["../../etc", "/etc", FOLDER + "/..", "", "x" * 36])
def test_a_folder_named_by_anything_but_a_uuid_is_refused(tmp_path: Path, folder: str) -> None:
    with pytest.raises(KernelError, match="invalid storage folder id"):
        binds(tmp_path, folder)


def test_a_folder_that_is_not_mounted_is_refused(tmp_path: Path) -> None:
    (tmp_path / FOLDER / "mnt").mkdir(parents=True)  # a plain folder, not the folder's fs
    with pytest.raises(KernelError, match="not mounted on this node"):
        binds(tmp_path, FOLDER)


def test_a_link_planted_as_the_mount_is_refused(tmp_path: Path) -> None:
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "mnt").symlink_to("/")  # "/" is a mount point: the link is not
    with pytest.raises(KernelError, match="not mounted on this node"):
        binds(tmp_path, FOLDER)


def test_a_mounted_folder_is_bound_at_its_mount(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mount = tmp_path / FOLDER / "mnt"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (bind,) = binds(tmp_path, FOLDER)  # type: ignore[misc]
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert (bind.source, bind.destination, bind.readonly) == (mount, "/home/work/data", False)
