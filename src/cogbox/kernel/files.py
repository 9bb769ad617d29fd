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


class FileError(KernelError):
    """A file of /home/work could not be read, written or listed; the message names the path.

    Its subclasses say why where the cause is known, so callers (and the HTTP edge,
    `cogbox.service.errors`) tell them apart by type, never by their wording.
    """


class UnsafePathError(FileError):
    """A path that leads out of /home/work: absolute, with "..", or through a symlink."""


class WorkdirFullError(FileError):
    """A write that the quota of /home/work refused (ENOSPC, EDQUOT)."""


class PathNotFoundError(FileError):
    """A path that does not exist in /home/work (or a folder on the way to it)."""


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
    with NewFile(root, relpath) as new:
        new.write(data)
        new.commit()


class NewFile:
    """A file being written to `relpath` under `root` in chunks (an upload streamed from the
    network): it goes to a temporary file in its folder, and `commit` renames it into place.
    Closed without `commit`, the temporary file is removed. Raises WorkdirFullError naming the
    quota when /home/work is full."""

    def __init__(self, root: Path, relpath: str) -> None:
        parts = split_path(relpath)
        if not parts:
            raise UnsafePathError("no file name given: the path names /home/work itself")
        *folders, self._name = parts
        self._relpath = relpath
        self._temp = f".cogbox-upload-{secrets.token_hex(6)}"
        self._directory, self._owner = _open_dir(root, folders, relpath, create=True)
        self.size = 0
        try:
            self._fd = os.open(
                self._temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=self._directory,
            )
        except OSError as exc:
            os.close(self._directory)
            raise self._error(exc) from exc
        _give_to_jail(self._fd, self._owner)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.size += written
        except OSError as exc:
            raise self._error(exc) from exc

    def commit(self) -> None:
        try:
            os.rename(
                self._temp, self._name, src_dir_fd=self._directory, dst_dir_fd=self._directory
            )
        except IsADirectoryError as exc:
            raise FileError(f"cannot upload to {self._relpath!r}: it is a directory") from exc
        except OSError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        if self._directory < 0:
            return
        os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(self._temp, dir_fd=self._directory)
        os.close(self._directory)
        self._directory = -1

    def __enter__(self) -> "NewFile":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _error(self, exc: OSError) -> FileError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return WorkdirFullError(
                f"cannot upload {self._relpath!r} ({self.size:,} bytes written): /home/work "
                "is full (the session's workdir quota)"
            )
        return FileError(f"cannot upload to {self._relpath!r}: {exc.strerror}")


def read_file(root: Path, relpath: str, limit: int = DOWNLOAD_LIMIT_BYTES) -> bytes:
    """The contents of the regular file `relpath` under `root` (at most `limit` bytes)."""
    with open_file(root, relpath, limit) as opened:
        chunks: list[bytes] = []
        size = 0
        while chunk := opened.read():
            size += len(chunk)
            if size > limit:  # it grew while we read
                raise FileError(f"cannot download {relpath!r}: more than {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


class OpenFile:
    """A regular file of /home/work opened for reading; `size` is its size when opened (the
    jailed code may still change it: readers that promised `size` bytes pad or cut)."""

    def __init__(self, fd: int, size: int, mtime: float = 0.0) -> None:
        self._fd = fd
        self.size = size
        self.mtime = mtime  # its modification time when opened (downloads keep it)

    def read(self, size: int = _CHUNK) -> bytes:
        return os.read(self._fd, size)

    def read_at(self, offset: int, size: int = _CHUNK) -> bytes:
        """Up to `size` bytes from `offset` (no shared position: one file, many readers)."""
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "OpenFile":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_file(root: Path, relpath: str, limit: int = DOWNLOAD_LIMIT_BYTES) -> OpenFile:
    """The regular file `relpath` under `root`, opened for reading if it holds at most
    `limit` bytes (the same path rules as `read_file`)."""
    parts = split_path(relpath)
    if not parts:
        raise FileError("no file name given: the path names /home/work itself")
    *folders, name = parts
    directory, _ = _open_dir(root, folders, relpath, create=False)
    try:
        fd = _open_component(name, directory, _READ_FLAGS, relpath)
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"cannot download {relpath!r}: it is not a regular file")
        if info.st_size > limit:
            raise FileError(
                f"cannot download {relpath!r}: it holds {info.st_size:,} bytes, more than "
                f"the limit of {limit:,}"
            )
        return OpenFile(fd, info.st_size, info.st_mtime)
    except BaseException:
        os.close(fd)
        raise


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
        raise FileError(f"cannot make a folder for {relpath!r}: {exc.strerror}") from exc
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
            raise FileError(f"{relpath!r}: {name!r} is not a directory") from exc
        if exc.errno == errno.ENOENT:
            raise PathNotFoundError(f"{relpath!r} does not exist in /home/work") from exc
        raise FileError(f"cannot open {relpath!r}: {exc.strerror}") from exc


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
