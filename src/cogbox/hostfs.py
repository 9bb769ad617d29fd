"""Proven-path helpers: how the host (root) touches a folder that a jail can write.

A jail may swap any name in a folder it can write for a symbolic link, a hard link, a
FIFO or a folder, at any moment. So the host never resolves a path inside such a folder:
it holds a directory fd of the folder (opened through host-only parents), acts on one name
at a time relative to it with `O_NOFOLLOW`, and checks what it opened with `fstat` before
it uses it. A socket is opened with `O_PATH` and dialled through `/proc/self/fd/N`, so the
host connects to the very inode it checked, whatever the name points to afterwards.
"""

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from cogbox.errors import CogboxError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_ATTEMPTS = 8  # a jail re-planting the name between unlink and create loses the race


class HostPathError(CogboxError):
    """An entry of a jail-writable folder is not what the host expects (and was not used)."""


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """A directory fd of `path`, whose parents must be host-only (not jail-writable)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove `name` from the folder, whatever it is (a folder with all it holds, a link
    itself, a FIFO, a socket); nothing outside the folder is touched."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        # shutil.rmtree with dir_fd walks by fds and never follows links (Linux).
        shutil.rmtree(name, dir_fd=dir_fd)


def clear_dir(dir_fd: int) -> None:
    """Remove every entry of the folder (not the folder itself)."""
    for name in os.listdir(dir_fd):
        remove_entry(dir_fd, name)


def write_new_file(
    dir_fd: int, name: str, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Replace `name` in the folder with a new regular file holding `data`.

    Whatever was planted at `name` is removed first, and the file is created with
    `O_CREAT|O_EXCL|O_NOFOLLOW`, so the write can only land in a fresh inode of this folder.
    `owner` (uid, gid) is set on that inode through its fd.
    """
    for _ in range(_CREATE_ATTEMPTS):
        remove_entry(dir_fd, name)
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue  # planted again meanwhile
        try:
            os.write(fd, data)
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        return
    raise HostPathError(f"{name} was re-created each time it was replaced; not written")


def open_socket(dir_fd: int, name: str, *, owner: int, device: int) -> int:
    """An `O_PATH` fd of the Unix socket `name`, proven to be a socket owned by `owner` on
    filesystem `device` (the folder's own); dial it as `/proc/self/fd/<fd>`.

    Raises FileNotFoundError while it does not exist yet, HostPathError if it is anything
    else (a link, a FIFO, a file, someone else's socket, a hard link from elsewhere).
    """
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISSOCK(info.st_mode):
            raise HostPathError(f"{name} is not a socket ({_kind(info.st_mode)})")
        if info.st_uid != owner:
            raise HostPathError(f"{name} is owned by uid {info.st_uid}, not the jail's {owner}")
        if info.st_dev != device:
            raise HostPathError(f"{name} is on another filesystem than its folder")
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str:
    """The path through which this process reaches the inode of `fd`."""
    return f"/proc/self/fd/{fd}"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a device or other special file"
