"""Giving a storage folder, on a filesystem of its own, to the jail that mounts it read-write.

A storage folder (`cogbox.service.vfolders`) is the root of its own ext4 image, so every
inode in it belongs to the folder: no hard link can reach a file outside, and chowning
all of it to the jail's identity cannot hand the jail anything else. The walk goes by
directory fds with O_NOFOLLOW and changes links themselves, never what they point to.
"""

import contextlib
import os
import stat
from pathlib import Path

from cogbox.jail.identity import Identity

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def give_folder(root: Path, owner: Identity) -> None:
    """Give `root` and everything in it to `owner`'s work user and group."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        _give(fd, owner.host_uid, owner.host_gid)
        os.fchown(fd, owner.host_uid, owner.host_gid)
    finally:
        os.close(fd)


def _give(dir_fd: int, uid: int, gid: int) -> None:
    for entry in os.scandir(dir_fd):
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    _give(child, uid, gid)
                finally:
                    os.close(child)
        if (info.st_uid, info.st_gid) != (uid, gid):
            with contextlib.suppress(FileNotFoundError):
                os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
