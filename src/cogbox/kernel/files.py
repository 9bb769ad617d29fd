"""A session's files: read, write and list /home/work from the host without following links.

The work directory is written by untrusted code, so every path is walked one component at
a time from a directory fd, each opened with O_NOFOLLOW: a symbolic link planted anywhere on
the path (or swapped in while we walk) is refused, never followed. Judge0's sandbox escapes
were host code following links that the user's code had left in its work directory.

Paths are relative to /home/work ("data/x.csv"); absolute paths and ".." are refused.
An upload is written to a temporary file and renamed into place, so it never writes through
a hard link or into a file the jailed code holds open. What the host creates there belongs
to the owner of /home/work itself, which is the session's host identity (see
`cogbox.jail.identity`; the jail cannot change that owner).
"""

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from cogbox.kernel.errors import KernelError

DOWNLOAD_LIMIT_BYTES = 256 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20

FileKind = Literal["file", "directory", "symlink", "other"]


class UnsafePathError(KernelError):
    """A path that leads out of /home/work: absolute, with "..", or through a symlink."""


@dataclass(frozen=True)
class FileEntry:
    """One entry of a directory in /home/work (links are listed, never followed)."""

    name: str
    kind: FileKind
    size: int
    mtime: float


def split_path(relpath: str) -> list[str]:
    """The components of a path relative to /home/work; refuses paths that leave it."""
    if "\0" in relpath:
        raise UnsafePathError(f"path {relpath!r} contains a NUL byte")
    path = PurePosixPath(relpath)
    if path.is_absolute():
        raise UnsafePathError(f"path {relpath!r} is absolute; give a path relative to /home/work")
    parts = [part for part in path.parts if part != "."]
    if ".." in parts:
        raise UnsafePathError(f"path {relpath!r} contains '..'; it must stay inside /home/work")
    return parts


def write_file(root: Path, relpath: str, data: bytes) -> None:
    """Write `data` to `relpath` under `root`, making missing parent directories."""
    parts = split_path(relpath)
    if not parts:
        raise UnsafePathError("no file name given: the path names /home/work itself")
    *folders, name = parts
    directory, owner = _open_dir(root, folders, relpath, create=True)
    temp = f".cogbox-upload-{secrets.token_hex(6)}"
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=directory
        )
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
            _give_to_jail(fd, owner)
        finally:
            os.close(fd)
        try:
            os.rename(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
        except IsADirectoryError as exc:
            raise KernelError(f"cannot upload to {relpath!r}: it is a directory") from exc
        except OSError as exc:
            raise KernelError(f"cannot upload to {relpath!r}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise KernelError(
                f"cannot upload {relpath!r} ({len(data):,} bytes): /home/work is full "
                "(the session's workdir quota)"
            ) from exc
        raise KernelError(f"cannot upload to {relpath!r}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=directory)
        os.close(directory)


def read_file(root: Path, relpath: str, limit: int = DOWNLOAD_LIMIT_BYTES) -> bytes:
    """The contents of the regular file `relpath` under `root` (at most `limit` bytes)."""
    parts = split_path(relpath)
    if not parts:
        raise KernelError("no file name given: the path names /home/work itself")
    *folders, name = parts
    directory, _ = _open_dir(root, folders, relpath, create=False)
    try:
        fd = _open_component(name, directory, _READ_FLAGS, relpath)
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KernelError(f"cannot download {relpath!r}: it is not a regular file")
        if info.st_size > limit:
            raise KernelError(
                f"cannot download {relpath!r}: it holds {info.st_size:,} bytes, more than "
                f"the limit of {limit:,}"
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > limit:  # it grew while we read
                raise KernelError(f"cannot download {relpath!r}: more than {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_dir(root: Path, relpath: str = ".") -> list[FileEntry]:
    """The entries of directory `relpath` under `root`, sorted by name."""
    directory, _ = _open_dir(root, split_path(relpath), relpath, create=False)
    try:
        entries = []
        for name in sorted(os.listdir(directory)):
            try:
                info = os.stat(name, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we listed
            entries.append(FileEntry(name, _kind(info.st_mode), info.st_size, info.st_mtime))
        return entries
    finally:
        os.close(directory)


def _open_dir(
    root: Path, folders: list[str], relpath: str, *, create: bool
) -> tuple[int, tuple[int, int]]:
    """The folder's fd, and the (uid, gid) that own `root`: whose new entries are."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        st = os.fstat(fd)
        owner = (st.st_uid, st.st_gid)
        for folder in folders:
            if create:
                _make_folder(folder, fd, relpath, owner)
            child = _open_component(folder, fd, _DIR_FLAGS, relpath)
            os.close(fd)
            fd = child
        return fd, owner
    except BaseException:
        os.close(fd)
        raise


def _make_folder(name: str, dir_fd: int, relpath: str, owner: tuple[int, int]) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        return  # a folder (opened next), or a link (refused next)
    except OSError as exc:
        raise KernelError(f"cannot make a folder for {relpath!r}: {exc.strerror}") from exc
    with contextlib.suppress(PermissionError):  # not root: the folder stays ours
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)


def _open_component(name: str, dir_fd: int, flags: int, relpath: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(
                f"refused {relpath!r}: {name!r} is a symbolic link, and links in /home/work "
                "are never followed from the host"
            ) from exc
        if exc.errno == errno.ENOTDIR:
            # O_DIRECTORY|O_NOFOLLOW on a symlink to a directory also fails this way.
            if _is_link(name, dir_fd):
                raise UnsafePathError(
                    f"refused {relpath!r}: {name!r} is a symbolic link, and links in "
                    "/home/work are never followed from the host"
                ) from exc
            raise KernelError(f"{relpath!r}: {name!r} is not a directory") from exc
        if exc.errno == errno.ENOENT:
            raise KernelError(f"{relpath!r} does not exist in /home/work") from exc
        raise KernelError(f"cannot open {relpath!r}: {exc.strerror}") from exc


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _give_to_jail(fd: int, owner: tuple[int, int]) -> None:
    with contextlib.suppress(PermissionError):
        os.fchown(fd, *owner)


def _kind(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"
