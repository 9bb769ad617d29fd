"""Per-session host identities: the host uid/gid a jail's processes and files have.

Every jail runs in its own user namespace. Inside, the work user is still `JAIL_UID`:`JAIL_GID`
(1000:1000, images are unchanged); on the host, the namespace's ids 0..SLOT_SIZE-1 are a block
of SLOT_SIZE ids that only this session holds, so its uid 1000 is `Identity.host_uid`, an id
that no other session and no host user has. The blocks come from a range reserved for cogbox,
`RANGE_START` up to `RANGE_START + SLOT_COUNT * SLOT_SIZE`: above systemd's container range
(524288-1879048191), below 2^31 (where tools with signed ids break), and checked against
/etc/passwd, /etc/group, /etc/subuid and /etc/subgid at each allocation.

A slot is a file `/run/cogbox/identities/<n>` that its holder keeps open and flock()ed for as
long as its session lives (the lock dies with the process). One folder for the whole host,
whatever the data dir: two cogbox data dirs on one host must not hand out the same ids, and
/run is emptied at boot, when no jail survives anyway. Taking a slot is O_CREAT|O_EXCL
or, for a file whose lock is free (its holder died), flock + a check that the file is still
the one at that path + a check that no host process still runs with an id of the block (a
stale jail of a crashed service must not share its ids with a new session). Safe across
threads and processes without any other coordination.
"""

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cogbox.config import data_dir
from cogbox.errors import CogboxError
from cogbox.jail.policy import JAIL_GID, JAIL_UID

RANGE_START = 0x7000_0000  # 1879048192
SLOT_SIZE = 1 << 16  # ids 0..65535 inside: root (runc's setup), 1000, tty's gid 5, nobody
SLOT_COUNT = 4094  # up to 0x7FFE0000: systemd's "foreign" range starts there
RANGE_END = RANGE_START + SLOT_COUNT * SLOT_SIZE
# As root (the only user that can start jails); otherwise in the data dir.
HOST_SLOTS_DIR = Path("/run/cogbox/identities")
_ID_FILES = {
    "/etc/passwd": "uid",
    "/etc/group": "gid",
}
_SUBID_FILES = ("/etc/subuid", "/etc/subgid")


class IdentityError(CogboxError):
    """No host identity could be given to a jail (range collision, all slots taken)."""


@dataclass(frozen=True)
class Identity:
    """One slot of the reserved range: the host ids a session's jail runs as."""

    slot: int

    @property
    def base(self) -> int:
        """The host id of the namespace's id 0 (uid and gid alike)."""
        return RANGE_START + self.slot * SLOT_SIZE

    @property
    def host_uid(self) -> int:
        """The host uid of the jail's work user (`JAIL_UID` inside)."""
        return self.base + JAIL_UID

    @property
    def host_gid(self) -> int:
        """The host gid of the jail's work group (`JAIL_GID` inside)."""
        return self.base + JAIL_GID

    def uid_mappings(self) -> list[dict[str, int]]:
        """OCI `linux.uidMappings` (and, ids being equal, `gidMappings`)."""
        return [{"containerID": 0, "hostID": self.base, "size": SLOT_SIZE}]

    def owns(self, host_id: int) -> bool:
        """Whether `host_id` (a uid or gid on the host) belongs to this slot's block."""
        return self.base <= host_id < self.base + SLOT_SIZE


def in_reserved_range(host_id: int) -> bool:
    """Whether a host uid/gid is one cogbox hands to jails (any slot)."""
    return RANGE_START <= host_id < RANGE_END


class IdentityLease:
    """A held slot: `identity` is this session's until `release()` (or this process ends)."""

    def __init__(self, identity: Identity, fd: int, path: Path) -> None:
        self.identity = identity
        self._fd: int | None = fd
        self._path = path
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        """The locked slot file's fd: a process given a copy holds the slot with us (a
        kernel's monitor does, so the slot outlives its session's process)."""
        if self._fd is None:
            raise IdentityError(f"identity slot {self.identity.slot} was released")
        return self._fd

    def forget(self) -> None:
        """Close our fd without giving the slot back: another holder of the lock keeps it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @classmethod
    def adopt(cls, identity: Identity, fd: int, slots: Path | None = None) -> "IdentityLease":
        """A lease of the slot whose locked file `fd` is (a copy from another holder).

        If a holder unlinked the file meanwhile, the lock no longer guards the slot, but
        `allocate` still skips it while the jail's processes run with its ids; `release`
        then unlinks nothing (it only removes the file it holds)."""
        return cls(identity, fd, (slots or slots_dir()) / str(identity.slot))

    def release(self) -> None:
        """Give the slot back; safe to repeat. Call once no process of the jail is left."""
        with self._lock:
            if self._fd is None:
                return
            # Unlink while locked: a waiter that locked the old file then sees it is gone.
            with contextlib.suppress(OSError):
                if _same_file(self._fd, self._path):
                    os.unlink(self._path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "IdentityLease":
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def allocate(slots: Path | None = None) -> IdentityLease:
    """Take a free slot of the reserved range; IdentityError if none is free or it collides.

    `slots` is the folder of slot files (default: `slots_dir()`, one for the host).
    """
    check_range()
    slots = slots or slots_dir()
    slots.mkdir(parents=True, exist_ok=True, mode=0o700)
    running: set[int] | None = None  # ids of host processes, read once if needed
    for slot in range(SLOT_COUNT):
        path = slots / str(slot)
        fd = _take(path)
        if fd is None:
            continue
        identity = Identity(slot)
        if running is None:
            running = _running_ids()
        if any(identity.owns(host_id) for host_id in running):
            # A jail whose driver died still runs with these ids: leave the slot to it.
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return IdentityLease(identity, fd, path)
    raise IdentityError(
        f"all {SLOT_COUNT} host identities of cogbox's id range are in use; end some sessions"
    )


def reap_stale_identities(slots: Path | None = None) -> list[int]:
    """Remove slot files whose holder died and whose ids no process uses; their numbers."""
    reaped: list[int] = []
    slots = slots or slots_dir()
    try:
        names = os.listdir(slots)
    except FileNotFoundError:
        return reaped
    running: set[int] | None = None
    for name in sorted(names, key=lambda n: (len(n), n)):
        if not name.isdigit():
            continue
        path = slots / name
        fd = _take(path, create=False)
        if fd is None:
            continue
        if running is None:
            running = _running_ids()
        identity = Identity(int(name))
        if not any(identity.owns(host_id) for host_id in running):
            IdentityLease(identity, fd, path).release()
            reaped.append(identity.slot)
        else:
            os.close(fd)
    return reaped


def held_slots(slots: Path | None = None) -> list[int]:
    """Slots whose file exists (held, or left by a dead holder not reaped yet)."""
    try:
        return sorted(int(n) for n in os.listdir(slots or slots_dir()) if n.isdigit())
    except FileNotFoundError:
        return []


def slots_dir() -> Path:
    """The host's folder of slot files: /run/cogbox/identities as root."""
    if os.geteuid() == 0:
        return HOST_SLOTS_DIR
    return data_dir() / "run" / "identities"


def check_range(etc: Path = Path("/etc")) -> None:
    """IdentityError if a host user, group or subordinate id range overlaps cogbox's range."""
    for name, kind in _ID_FILES.items():
        for entry, host_id in _passwd_ids(etc / Path(name).name):
            if in_reserved_range(host_id):
                raise IdentityError(
                    f"{kind} {host_id} of {entry!r} in {name} lies in cogbox's reserved id "
                    f"range {RANGE_START}-{RANGE_END - 1}; jails would share it. Move that "
                    "entry out of the range"
                )
    for name in _SUBID_FILES:
        for entry, start, count in _subid_ranges(etc / Path(name).name):
            if start < RANGE_END and start + count > RANGE_START:
                raise IdentityError(
                    f"{name} gives {entry!r} ids {start}-{start + count - 1}, which overlap "
                    f"cogbox's reserved id range {RANGE_START}-{RANGE_END - 1}; jails would "
                    "share them. Move that range"
                )


def _take(path: Path, *, create: bool = True) -> int | None:
    """An fd of `path`, flock()ed by us and still linked there; None if someone holds it."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            fd = os.open(path, flags | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        except FileExistsError:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                continue  # released meanwhile: try to create it again
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # released (unlinked) between our open and our lock
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _running_ids() -> set[int]:
    """Every real, effective, saved and fs uid and gid of every process on the host."""
    ids: set[int] = set()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith(("Uid:", "Gid:")):
                        ids.update(int(value) for value in line.split()[1:])
        except (OSError, ValueError):
            continue  # ended meanwhile
    return ids


def _pids() -> Iterator[str]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield entry.name


def _passwd_ids(path: Path) -> Iterator[tuple[str, int]]:
    for line in _lines(path):
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            yield fields[0], int(fields[2])


def _subid_ranges(path: Path) -> Iterator[tuple[str, int, int]]:
    for line in _lines(path):
        fields = line.split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            yield fields[0], int(fields[1]), int(fields[2])


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise IdentityError(f"cannot read {path} to check cogbox's id range: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


__all__ = [
    "RANGE_END",
    "RANGE_START",
    "SLOT_SIZE",
    "Identity",
    "IdentityError",
    "IdentityLease",
    "allocate",
    "check_range",
    "held_slots",
    "in_reserved_range",
    "reap_stale_identities",
]
