"""A storage folder's files from the host: list, make folders, move, remove, read, write.

Jails that mount a folder read-write can plant links, FIFOs and swaps in it at any moment, so
every operation here walks the path one component at a time from the folder's root fd with
O_NOFOLLOW (the rules of `cogbox.kernel.files`, whose reader and writer this reuses): a link
anywhere on the way is refused, never followed; a link as the last component is listed,
moved or removed as the link itself. Paths are relative to the folder's root; absolute paths,
".." and NUL are refused (400). Blocking: callers run these in a thread.
"""

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cogbox.hostfs import remove_entry
from cogbox.kernel.errors import KernelError
from cogbox.kernel.files import (
    FileError,
    NewFile,
    OpenFile,
    UnsafePathError,
    WorkdirFullError,
    open_file,
)
from cogbox.kernel.files import split_path as _split
from cogbox.service.errors import (
    ServiceError,
    bad_request,
    conflict,
    listed_problem,
    not_found,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LISTED = 10_000  # entries one listing returns (a folder can hold millions)
MAX_REMOVED_PATHS = 1_000


@dataclass(frozen=True)
class FolderEntry:
    """One entry of a folder's directory (links are listed, never followed)."""

    name: str
    mode: int
    size: int
    mtime: float

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def split_path(relpath: object, what: str = "path") -> list[str]:
    """Components of a path inside the folder; 400 naming `what` if it leaves it."""
    if not isinstance(relpath, str):
        raise bad_request(f"'{what}' must be a string")
    try:
        return _split(relpath)
    except UnsafePathError as exc:
        raise _kernel_error(exc) from exc


def list_dir(root: Path, relpath: object) -> list[FolderEntry]:
    fd = _walk(root, split_path(relpath), str(relpath))
    try:
        entries = []
        for name in sorted(os.listdir(fd))[:MAX_LISTED]:
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we listed
            entries.append(FolderEntry(name, info.st_mode, info.st_size, info.st_mtime))
        return entries
    finally:
        os.close(fd)


def make_dir(root: Path, relpath: object, *, parents: bool, exist_ok: bool) -> None:
    parts = split_path(relpath)
    if not parts:
        raise bad_request("'path' names the folder itself")
    *above, name = parts
    fd = _walk(root, above, str(relpath), create=parents)
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
        _give_like_parent(fd, name)
    except FileExistsError as exc:
        if not (exist_ok and _is_dir(fd, name)):
            raise conflict(f"{relpath!r} already exists") from exc
    except OSError as exc:
        raise _os_error(exc, str(relpath)) from exc
    finally:
        os.close(fd)


def move(root: Path, src: object, dst: object) -> None:
    """Move `src` to `dst`; into `dst` if that is a directory (Backend.AI's `vfolder mv`)."""
    src_parts, dst_parts = split_path(src, "src"), split_path(dst, "dst")
    if not src_parts:
        raise bad_request("'src' names the folder itself")
    *src_above, src_name = src_parts
    src_fd = _walk(root, src_above, str(src))
    try:
        dst_fd = _walk(root, dst_parts, str(dst)) if _dir_at(root, dst_parts) else None
        if dst_fd is None:
            if not dst_parts:
                raise bad_request("'dst' names the folder itself")
            *dst_above, dst_name = dst_parts
            dst_fd = _walk(root, dst_above, str(dst))
        else:
            dst_name = src_name
        try:
            os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        except OSError as exc:
            raise _os_error(exc, f"{src!r} to {dst!r}") from exc
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def rename(root: Path, target: object, new_name: object) -> None:
    """Give `target` the name `new_name` in the same directory."""
    parts = split_path(target, "target_path")
    if not parts:
        raise bad_request("'target_path' names the folder itself")
    if not isinstance(new_name, str) or not new_name or "/" in new_name or new_name in (".", ".."):
        raise bad_request("'new_name' must be one name, without '/'")
    split_path(new_name, "new_name")
    *above, name = parts
    fd = _walk(root, above, str(target))
    try:
        if _exists(fd, new_name):
            raise conflict(f"{new_name!r} already exists next to {target!r}")
        os.rename(name, new_name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as exc:
        raise _os_error(exc, str(target)) from exc
    finally:
        os.close(fd)


def remove(root: Path, paths: object, *, recursive: bool) -> None:
    if not isinstance(paths, list) or not paths or len(paths) > MAX_REMOVED_PATHS:
        raise bad_request(f"'files' must be a list of 1 to {MAX_REMOVED_PATHS} paths")
    for path in paths:
        parts = split_path(path, "files")
        if not parts:
            raise bad_request("'files' names the folder itself")
        *above, name = parts
        fd = _walk(root, above, str(path))
        try:
            if not _exists(fd, name):
                raise not_found(f"{path!r} does not exist in the folder")
            if _is_dir(fd, name) and not recursive:
                raise bad_request(f"{path!r} is a directory: remove it with the recursive option")
            remove_entry(fd, name)  # a link goes, what it points to stays
        finally:
            os.close(fd)


def open_for_download(root: Path, relpath: object, limit: int) -> OpenFile:
    split_path(relpath)
    try:
        return open_file(root, str(relpath), limit)
    except KernelError as exc:
        raise _kernel_error(exc) from exc


def new_upload(root: Path, relpath: object) -> NewFile:
    split_path(relpath)
    try:
        return NewFile(root, str(relpath))
    except KernelError as exc:
        raise _kernel_error(exc) from exc


def upload_error(exc: KernelError) -> ServiceError:
    """The refusal for a write into an upload that failed (the folder's quota, mostly)."""
    return _kernel_error(exc)


# ---------------------------------------------------------------------------- walking


def _walk(root: Path, folders: list[str], relpath: str, *, create: bool = False) -> int:
    """The fd of directory `folders` under `root`, never through a link."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for folder in folders:
            if create:
                try:
                    os.mkdir(folder, 0o755, dir_fd=fd)
                    _give_like_parent(fd, folder)
                except FileExistsError:
                    pass  # a directory (opened next) or a link (refused next)
                except OSError as exc:
                    raise _os_error(exc, relpath) from exc
            try:
                child = os.open(folder, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, folder):
                    raise ServiceError(
                        400,
                        "invalid-path",
                        f"refused {relpath!r}: {folder!r} is a symbolic link, and links in a "
                        "folder are never followed from the host",
                    ) from exc
                raise _os_error(exc, relpath) from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _dir_at(root: Path, parts: list[str]) -> bool:
    try:
        os.close(_walk(root, parts, "/".join(parts)))
        return True
    except ServiceError:
        return False


def _give_like_parent(dir_fd: int, name: str) -> None:
    """New entries belong to whoever owns their directory (the jail that holds the folder)."""
    info = os.fstat(dir_fd)
    with contextlib.suppress(PermissionError):  # not root: the entry stays ours
        os.chown(name, info.st_uid, info.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _exists(dir_fd: int, name: str) -> bool:
    return _lstat(dir_fd, name) is not None


def _is_dir(dir_fd: int, name: str) -> bool:
    info = _lstat(dir_fd, name)
    return info is not None and stat.S_ISDIR(info.st_mode)


def _is_link(dir_fd: int, name: str) -> bool:
    info = _lstat(dir_fd, name)
    return info is not None and stat.S_ISLNK(info.st_mode)


def _in_folder(message: str) -> str:
    # kernel.files words its errors for /home/work; here the root is a storage folder.
    return message.replace("in /home/work", "in the folder").replace("/home/work", "the folder")


def _kernel_error(exc: KernelError) -> ServiceError:
    """kernel.files' error reworded for a folder; told apart by type, as the edge does."""
    message = _in_folder(str(exc))
    if isinstance(exc, WorkdirFullError):  # the folder's own quota, with its own code
        return ServiceError(
            413, "vfolder-full", message.replace("(the session's workdir quota)", "(its quota)")
        )
    kind = type(exc) if isinstance(exc, FileError) else FileError
    return listed_problem(kind(message))


def _os_error(exc: OSError, what: str) -> ServiceError:
    if exc.errno == errno.ENOENT:
        return not_found(f"{what} does not exist in the folder")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ServiceError(413, "vfolder-full", f"{what}: the folder is full (its quota)")
    if exc.errno == errno.ENOTDIR:
        return bad_request(f"{what}: a part of the path is not a directory")
    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return conflict(f"{what}: the destination exists")
    if exc.errno == errno.EINVAL:
        return bad_request(f"{what}: cannot move a directory into itself")
    return bad_request(f"{what}: {exc.strerror}")
