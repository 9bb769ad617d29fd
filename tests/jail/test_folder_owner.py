"""Giving a storage folder to a jail's identity (`jail/folder_owner.py`): everything in it, by
fds, links themselves and never what they point to."""

import os
from pathlib import Path

import pytest

from cogbox.jail.folder_owner import give_folder
from cogbox.jail.identity import Identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
OWNER = Identity(slot=7)


def test_every_entry_of_the_folder_goes_to_the_identity(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "f.txt").write_text("x")
    give_folder(folder, OWNER)
    ids = {(p.lstat().st_uid, p.lstat().st_gid) for p in [folder, *folder.rglob("*")]}
    assert ids == {(OWNER.host_uid, OWNER.host_gid)}


def test_a_planted_link_is_given_itself_and_its_target_is_left_alone(tmp_path: Path) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("host")
    outside_dir = tmp_path / "host-dir"
    outside_dir.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "to-file").symlink_to(outside)
    (folder / "to-dir").symlink_to(outside_dir)
    give_folder(folder, OWNER)
    assert (folder / "to-file").lstat().st_uid == OWNER.host_uid
    assert (outside.stat().st_uid, outside_dir.stat().st_uid) == (0, 0)
