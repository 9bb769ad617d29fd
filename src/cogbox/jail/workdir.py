"""The jail's /home/work on the host: a plain bind, or a quota-sized ext4 image synced back.

Without a quota the host directory is bound in directly. With `workdir_quota_bytes` the
launcher builds a sparse ext4 image of exactly that size, filled from the host directory
(`mkfs.ext4 -d`), loop-mounts it and binds the mount in; a write past the quota fails with
ENOSPC. When the jail ends, changes are copied back to the host directory and the image is
deleted, so the host directory stays the one place where a session's files live.

Why ext4-on-loop: project quotas need a host filesystem mounted with `prjquota` (most are
not), and a tmpfs would charge the files to the jail's memory limit. The quota is the
filesystem's size, so ext4's own metadata (about 1-2 %) counts against it.

Copying back never follows a symbolic link on either side: the image's contents and the host
directory are both written by untrusted code, and a host that follows their links can be
tricked into writing anywhere (Judge0's escapes were of this kind). It keeps holes (a sparse
file costs the quota nothing, and must not cost the host more), and it never writes more
bytes than the quota filesystem held: hard links or sparse tricks cannot turn a small quota
into a large host file.

Ownership: /home/work and everything in it belong on the host to the session's identity
(`identity.py`): `prepare` gives the directory, and whatever in it belongs to an earlier
cogbox identity or to the legacy shared uid 1000, to the jail's identity (a session that
comes back gets a new slot), the quota image is made from that, and the copy back gives
every entry the identity's ids, whatever the image says.
"""

import contextlib
import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

from cogbox.errors import CogboxError
from cogbox.jail.identity import SLOT_SIZE, Identity, in_reserved_range
from cogbox.jail.policy import JAIL_GID, JAIL_UID

_MIN_IMAGE_BYTES = 4 << 20  # mkfs.ext4 cannot make a useful filesystem much smaller
# ext4 refuses a write (delayed allocation reserves room for metadata) while some free
# blocks remain; below this share of the quota free, a failed run is called "quota full".
_FULL_MARGIN_RATIO = 0.2


class WorkdirError(CogboxError):
    """The jail's /home/work could not be prepared or saved."""


class CopyBudgetExceeded(WorkdirError):
    """Copying /home/work back would write more than its quota filesystem held."""


class Workdir:
    """One jail's /home/work: `source` is what to bind; `close()` saves and releases it."""

    def __init__(
        self,
        host_dir: Path,
        source: Path,
        *,
        owned: bool,
        image: Path | None = None,
        owner: Identity | None = None,
    ) -> None:
        self.host_dir = host_dir
        self.source = source  # bound at /home/work; the live view while the jail runs
        self.owned = owned  # the launcher made host_dir and deletes it on close
        self.image = image
        self.owner = owner  # whose files these are on the host (None: keep what they say)
        self._closed = False

    @classmethod
    def prepare(
        cls, host_dir: Path | None, quota_bytes: int | None, state_dir: Path, *, owner: Identity
    ) -> "Workdir":
        """Make `host_dir` (or a fresh temporary one in `state_dir`) ready to bind, owned
        by `owner`'s host ids."""
        owned = host_dir is None
        if host_dir is None:
            host_dir = state_dir / "home"
            host_dir.mkdir(mode=0o755)
        elif not host_dir.is_dir():
            raise WorkdirError(f"workdir {host_dir} is not a directory")
        host_dir = host_dir.resolve()
        give_tree(host_dir, owner)
        if quota_bytes is None:
            return cls(host_dir, host_dir, owned=owned, owner=owner)
        image = state_dir / "workdir.ext4"
        mount_point = state_dir / "workdir"
        mount_point.mkdir()
        _make_image(image, host_dir, quota_bytes, owner)
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(mount_point)], "mount")
        with contextlib.suppress(OSError):
            (mount_point / "lost+found").rmdir()
        return cls(host_dir, mount_point, owned=owned, image=image, owner=owner)

    def is_full(self) -> bool:
        """True when the quota filesystem has (almost) no free space: writes hit ENOSPC."""
        if self.image is None:
            return False
        try:
            fs = os.statvfs(self.source)
        except OSError:
            return False
        return fs.f_bavail < fs.f_blocks * _FULL_MARGIN_RATIO

    def close(self) -> None:
        """Copy changes back to the host directory, unmount, and delete what the launcher made.

        Call only once no jailed process is left (they are killed first); safe to repeat.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.image is not None:
                try:
                    if not self.owned:
                        sync_tree(
                            self.source,
                            self.host_dir,
                            max_bytes=_used_bytes(self.source),
                            owner=self.owner,
                        )
                finally:
                    _run(["umount", str(self.source)], "umount")
                    self.image.unlink(missing_ok=True)
        finally:
            if self.owned:
                shutil.rmtree(self.host_dir, ignore_errors=True)


def _used_bytes(mount: Path) -> int:
    """Bytes the filesystem at `mount` has allocated (data and metadata): the copy's budget."""
    fs = os.statvfs(mount)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def _make_image(image: Path, contents: Path, quota_bytes: int, owner: Identity) -> None:
    size = max(quota_bytes, _MIN_IMAGE_BYTES)
    with open(image, "wb") as handle:
        handle.truncate(size)  # sparse: host disk is used only as the jail writes
    command = [
        "mkfs.ext4", "-q", "-F",
        "-m", "0",  # no blocks reserved for root: the user gets the whole quota
        "-O", "^has_journal",  # scratch space rebuilt each run; a journal only costs space
        "-E", f"root_owner={owner.host_uid}:{owner.host_gid},lazy_itable_init=1",
        "-d", str(contents),
        str(image),
    ]  # fmt: skip
    try:
        _run(command, "mkfs.ext4")
    except WorkdirError as exc:
        raise WorkdirError(
            f"cannot make the /home/work quota filesystem ({quota_bytes} bytes) from "
            f"{contents}; does the directory hold more than the quota? ({exc})"
        ) from exc


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise WorkdirError(f"{what} is not installed; the workdir quota needs it") from exc
    if result.returncode != 0:
        raise WorkdirError(f"{what} failed: {result.stderr.strip() or result.returncode}")


# ---------------------------------------------------------------------------- ownership

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def give_tree(root: Path, owner: Identity) -> None:
    """Give `root`, and what in it a jail made under another identity, to `owner`.

    Only ids of cogbox's range (an earlier slot) and the legacy shared 1000 move, to the same
    id of `owner`'s block; anything else (root's, a host user's) is left alone, and so are
    hard-linked files of such ids. Never follows a link. Skipped when `root` already belongs
    to `owner` (it is given last).
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) == (owner.host_uid, owner.host_gid):
            return
        _give_entries(fd, owner)
        os.fchown(fd, owner.host_uid, owner.host_gid)
    finally:
        os.close(fd)


def _give_entries(dir_fd: int, owner: Identity) -> None:
    for entry in os.scandir(dir_fd):
        st = entry.stat(follow_symlinks=False)
        uid, gid = _moved_id(st.st_uid, JAIL_UID, owner), _moved_id(st.st_gid, JAIL_GID, owner)
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir:
            with contextlib.suppress(OSError):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    _give_entries(child, owner)
                finally:
                    os.close(child)
        if (uid, gid) == (st.st_uid, st.st_gid):
            continue
        if not is_dir and st.st_nlink > 1 and not in_reserved_range(st.st_uid):
            continue  # a second name of a file that is not a jail's
        os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _moved_id(host_id: int, legacy: int, owner: Identity) -> int:
    if host_id == legacy:
        return owner.base + legacy
    if in_reserved_range(host_id) and not owner.owns(host_id):
        return owner.base + (host_id - owner.base) % SLOT_SIZE
    return host_id


# ---------------------------------------------------------------------------- copying back


class _Budget:
    """Bytes the copy may still write; None = no cap."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.left = max_bytes

    def spend(self, count: int) -> None:
        if self.left is None:
            return
        if count > self.left:
            raise CopyBudgetExceeded(
                f"copying /home/work back would write more than the {self.max_bytes} bytes its "
                "quota filesystem held (many hard links to one file?); the copy was stopped"
            )
        self.left -= count


def sync_tree(
    source: Path, target: Path, *, max_bytes: int | None = None, owner: Identity | None = None
) -> None:
    """Make `target` hold what `source` holds (files, directories, symlinks as links).

    With `owner`, every entry written gets that identity's work user and group; without,
    the ids `source` says.

    Unchanged files (same size and mtime) are skipped; entries missing from `source` are
    removed. Devices, sockets and FIFOs are not copied. Works on directory fds with
    O_NOFOLLOW throughout, so no link in either tree is ever followed. Holes in sparse files
    stay holes; `max_bytes` caps the file data written (CopyBudgetExceeded past it).
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    budget = _Budget(max_bytes)
    src_fd = os.open(source, flags)
    try:
        dst_fd = os.open(target, flags)
        try:
            _sync_dir(src_fd, dst_fd, budget, _owner_ids(owner))
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _owner_ids(owner: Identity | None) -> tuple[int, int] | None:
    return None if owner is None else (owner.host_uid, owner.host_gid)


def _sync_dir(src_fd: int, dst_fd: int, budget: _Budget, ids: tuple[int, int] | None) -> None:
    wanted: set[str] = set()
    for entry in os.scandir(src_fd):
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        wanted.add(name)
        existing = _lstat(name, dst_fd)
        if existing is not None and stat.S_IFMT(existing.st_mode) != stat.S_IFMT(st.st_mode):
            _remove(name, dst_fd, existing)
            existing = None
        if stat.S_ISDIR(st.st_mode):
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=dst_fd)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            child_src = os.open(name, flags, dir_fd=src_fd)
            try:
                child_dst = os.open(name, flags, dir_fd=dst_fd)
                try:
                    _sync_dir(child_src, child_dst, budget, ids)
                    _copy_metadata(child_dst, st, ids)
                finally:
                    os.close(child_dst)
            finally:
                os.close(child_src)
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(name, dir_fd=src_fd)
            if existing is not None:
                if os.readlink(name, dir_fd=dst_fd) == link:
                    continue
                os.unlink(name, dir_fd=dst_fd)
            os.symlink(link, name, dir_fd=dst_fd)
            uid, gid = ids or (st.st_uid, st.st_gid)
            os.chown(name, uid, gid, dir_fd=dst_fd, follow_symlinks=False)
        else:
            if (
                existing is not None
                and existing.st_size == st.st_size
                and existing.st_mtime_ns == st.st_mtime_ns
            ):
                continue
            _copy_file(name, src_fd, dst_fd, st, budget, ids)
    for name in os.listdir(dst_fd):
        if name not in wanted:
            existing = _lstat(name, dst_fd)
            if existing is not None:
                _remove(name, dst_fd, existing)


def _copy_file(
    name: str,
    src_fd: int,
    dst_fd: int,
    st: os.stat_result,
    budget: _Budget,
    ids: tuple[int, int] | None,
) -> None:
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        target = os.open(name, flags, 0o600, dir_fd=dst_fd)
        try:
            size = os.fstat(source).st_size
            for start, end in _data_extents(source, size):
                budget.spend(end - start)
                _copy_range(source, target, start, end)
            os.ftruncate(target, size)  # a trailing hole, without writing it
            _copy_metadata(target, st, ids)
        finally:
            os.close(target)
    finally:
        os.close(source)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `fd` that hold data; holes in between are left out."""
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                break
            if exc.errno == errno.EINVAL:  # no SEEK_DATA here: all of it is data
                return [(offset, size)]
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            break
        extents.append((start, end))
        offset = end
    return extents


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        chunk = os.pread(source, min(1 << 20, end - offset), offset)
        if not chunk:
            return
        # Allocated but zero (fallocate, or zeros written out): keep it a hole on the host.
        if chunk != bytes(len(chunk)):
            view = memoryview(chunk)
            while view:
                written = os.pwrite(target, view, offset)
                view = view[written:]
                offset += written
        else:
            offset += len(chunk)


def _copy_metadata(fd: int, st: os.stat_result, ids: tuple[int, int] | None) -> None:
    uid, gid = ids or (st.st_uid, st.st_gid)
    os.fchown(fd, uid, gid)
    # Never setuid/setgid bits from untrusted code onto the host.
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o1777)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
