"""A kernel's runtime folder and Jupyter connection file, as the host and the jail see it.

The kernel listens on Unix sockets (`transport="ipc"`), not TCP: the jail has no network,
and a folder bound into the jail is how the host reaches it. Each kernel has a host-only
folder `/run/cogbox/k/<8 hex>` (root, 0700, never shown to the jail) holding:

    run/         a 1 MiB tmpfs owned by the jail's user, bound read-write at /run/cogbox in
                 the jail: the connection file (ipykernel 4.10 rewrites it) and the
                 kernel's sockets `k-1` ... `k-5`. The jail's writes there are capped and
                 charged to its memory, never to the host's disk.
    dial/        `k-N -> /proc/self/fd/M`: links to the sockets the host proved (see
                 `prove_sockets`); `connection_info()` names these, so it never resolves a
                 name the jail controls and stays valid across restarts of the kernel.
    kernel.log   the kernel process's own stdout/stderr (cogbox.kernel.kernel_log).

The folder is flock()ed while its `RuntimeDir` lives, and by the kernel's monitor (a copy
of the lock fd) while the kernel does; `reap_stale_runtimes` removes those nobody holds (a
service and monitor that were killed), with their keys. `monitor-<hex>/` (root, 0700) is
the monitor's: its control socket, exit record and log.
"""

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo

from cogbox import hostfs
from cogbox.images.paths import JAIL_RUNTIME_DIR  # where the jail sees the runtime directory
from cogbox.jail.identity import Identity
from cogbox.jail.policy import JAIL_GID, JAIL_UID
from cogbox.kernel.errors import KernelError
from cogbox.kernel.kernel_log import LOG_CAP_BYTES, KernelLog

__all__ = [
    "CONNECTION_FILE",
    "LOG_CAP_BYTES",
    "RuntimeDir",
    "channel_endpoint",
    "reap_stale_runtimes",
]

CONNECTION_FILE = "kernel.json"
SOCKET_PREFIX = "k"  # sockets are "<dir>/k-<port>"
_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the final NUL
# The jail's /run/cogbox: room for the connection file and sockets, little else.
RUNTIME_TMPFS_OPTIONS = "size=1m,nr_inodes=128,mode=0700"
_STAGING_PREFIX = ".new-"
# Folders of the format before this one (/run/cogbox/s/<id>, no lock): no kernel outlives
# the default wall time limit, so one older than a day is stale.
_OLD_FORMAT_MAX_AGE_SECONDS = 86400.0
_STAGING_MAX_AGE_SECONDS = 600.0


def runtime_base() -> Path:
    """Where runtime folders go: /run/cogbox/k as root, else a short folder in /tmp."""
    if os.geteuid() == 0:
        return Path("/run/cogbox/k")
    return Path(f"/tmp/cogbox-{os.getuid()}/k")


class RuntimeDir:
    """One kernel's runtime folder on the host, and the key that signs its messages.

    `owner` is the host uid the jail's kernel runs as: its sockets must belong to it.
    """

    def __init__(self, host_dir: Path, key: str, lock: int, owner: int, group: int) -> None:
        self.host_dir = host_dir
        self.path = host_dir / "run"  # what the jail sees at /run/cogbox
        self.dial = host_dir / "dial"
        self.key = key
        self.owner = owner
        self.group = group
        self._lock = lock
        self._sockets: dict[int, int] = {}  # port -> O_PATH fd of the proven socket

    @classmethod
    def create(
        cls, base: Path | None = None, *, owner: int = JAIL_UID, group: int = JAIL_GID
    ) -> "RuntimeDir":
        """A fresh runtime folder, locked as this process's, its tmpfs mounted as root."""
        base = base or runtime_base()
        _reap_once(base)
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for _ in range(16):
            name = secrets.token_hex(4)
            staging = base / f"{_STAGING_PREFIX}{name}"
            if (base / name).exists():
                continue
            try:
                staging.mkdir(mode=0o700)
            except FileExistsError:
                continue
            break
        else:
            raise KernelError("cannot create a kernel runtime folder: every name tried was taken")
        # Locked before it gets its name: a folder visible as <id> is always held or stale.
        lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(lock, fcntl.LOCK_EX)
        host_dir = base / name
        os.rename(staging, host_dir)
        runtime = cls(host_dir, secrets.token_hex(32), lock, owner, group)
        try:
            longest = f"{runtime.dial}/{SOCKET_PREFIX}-{max(_PORTS.values())}"
            if len(longest.encode()) > _MAX_SOCKET_PATH:
                raise KernelError(
                    f"the kernel's socket paths on the host are longer than the "
                    f"{_MAX_SOCKET_PATH} bytes a Unix socket address can hold; use a shorter "
                    "runtime folder"
                )
            runtime.dial.mkdir(mode=0o700)
            runtime.path.mkdir(mode=0o700)
            if os.geteuid() == 0:
                _mount_tmpfs(runtime.path, f"{RUNTIME_TMPFS_OPTIONS},uid={owner},gid={group}")
        except BaseException:
            runtime.remove()
            raise
        return runtime

    @classmethod
    def adopt(cls, host_dir: Path, key: str, lock: int, owner: int, group: int) -> "RuntimeDir":
        """The folder of a live kernel started by another process (a re-attach): `lock` is
        a copy of its held lock fd. Dial links left by that process lead to its fds, not
        ours: they are removed, and `prove_sockets` points them anew."""
        runtime = cls(host_dir, key, lock, owner, group)
        for port in _PORTS.values():
            with contextlib.suppress(FileNotFoundError):
                (runtime.dial / f"{SOCKET_PREFIX}-{port}").unlink()
        return runtime

    @property
    def lock_fd(self) -> int:
        """The fd whose flock marks the folder live (a kernel's monitor holds a copy)."""
        return self._lock

    def release(self) -> None:
        """Let go of the folder without removing it (another holder keeps it live)."""
        self._forget_sockets()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def give_to(self, identity: Identity) -> None:
        """Hand the folder to the host ids a kernel runs as (before `reset`): its tmpfs root
        is chowned, and the connection file and the sockets are then checked against them."""
        self.owner, self.group = identity.host_uid, identity.host_gid
        if os.geteuid() == 0:
            # The tmpfs root is the host's own mount point: the jail cannot swap it for a link.
            os.chown(self.path, self.owner, self.group, follow_symlinks=False)

    def open_to_gofer(self, identity: Identity) -> None:
        """Let the jail's namespace root reach the runtime tmpfs (gVisor's gofer opens bind
        sources as that id): the base becomes traversable (not listable), this folder
        0710 with that id's group, as the launcher does for bundles. Its key, log, dial
        links and monitor stay in 0700/0600 entries of root's."""
        if os.geteuid() != 0:
            return
        os.chmod(self.host_dir.parent, 0o711)
        os.chown(self.host_dir, 0, identity.base, follow_symlinks=False)
        os.chmod(self.host_dir, 0o710)

    def connection_info(self, directory: str | None = None) -> KernelConnectionInfo:
        """Jupyter connection info with sockets under `directory` (default: the host's dial
        links, which only this process can follow: they lead to its own fds)."""
        return KernelConnectionInfo(
            shell_port=_PORTS["shell_port"],
            iopub_port=_PORTS["iopub_port"],
            stdin_port=_PORTS["stdin_port"],
            control_port=_PORTS["control_port"],
            hb_port=_PORTS["hb_port"],
            ip=f"{directory or self.dial}/{SOCKET_PREFIX}",
            transport="ipc",
            key=self.key,
            signature_scheme="hmac-sha256",
            kernel_name="",
        )

    @property
    def log(self) -> Path:
        """Host-only file for the kernel process's own stdout/stderr."""
        return self.host_dir / "kernel.log"

    def open_log(self) -> KernelLog:
        """A fresh capped log for the next kernel started here."""
        return KernelLog(self.log)

    def reset(self) -> None:
        """Before a kernel starts here: forget the previous kernel's sockets, empty the
        runtime folder of whatever the jail left (links, folders, FIFOs included) and write
        a fresh connection file."""
        self._forget_sockets()
        connection = json.dumps(self.connection_info(JAIL_RUNTIME_DIR), indent=1).encode()
        owner = (self.owner, self.group) if os.geteuid() == 0 else None
        try:
            with hostfs.open_dir(self.path) as folder:
                hostfs.clear_dir(folder)
                hostfs.write_new_file(folder, CONNECTION_FILE, connection, owner=owner)
        except OSError as exc:  # its strerror only: no host path in a user's error
            raise KernelError(
                f"cannot prepare the kernel's runtime folder: {exc.strerror}"
            ) from exc
        except hostfs.HostPathError as exc:
            raise KernelError(f"cannot prepare the kernel's runtime folder: {exc}") from exc

    def prove_sockets(self) -> bool:
        """Take each socket the kernel made (checked: a socket of `owner` on the runtime
        tmpfs) and point its dial link at it; True once all five are taken.

        Raises KernelError if a name holds anything else: the host never dials it.
        """
        if len(self._sockets) == len(_PORTS):
            return True
        try:
            with hostfs.open_dir(self.path) as folder:
                self._prove_in(folder)
        except OSError as exc:  # its strerror only: no host path in a user's error
            raise KernelError(f"cannot reach the kernel's sockets: {exc.strerror}") from exc
        return len(self._sockets) == len(_PORTS)

    def _prove_in(self, folder: int) -> None:
        device = os.fstat(folder).st_dev
        for port in _PORTS.values():
            name = f"{SOCKET_PREFIX}-{port}"
            if port in self._sockets:
                continue
            try:
                fd = hostfs.open_socket(folder, name, owner=self.owner, device=device)
            except FileNotFoundError:
                continue  # not made yet
            except hostfs.HostPathError as exc:
                raise KernelError(
                    f"the kernel's socket {JAIL_RUNTIME_DIR}/{name} was replaced: {exc}; "
                    "the host did not connect to it"
                ) from exc
            self._sockets[port] = fd
            _point_link(self.dial / name, hostfs.fd_path(fd))

    def remove(self) -> None:
        """Unmount and delete the folder (key, sockets, logs) and release its lock."""
        self._forget_sockets()
        _remove_runtime(self.host_dir)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _forget_sockets(self) -> None:
        for port, fd in list(self._sockets.items()):
            with contextlib.suppress(FileNotFoundError):
                (self.dial / f"{SOCKET_PREFIX}-{port}").unlink()
            os.close(fd)
        self._sockets.clear()


def channel_endpoint(info: Mapping[str, Any], channel: str) -> str:
    """The ZMQ address of `channel` ("shell", "iopub", ...) in a kernel's connection info."""
    transport = str(info.get("transport") or "tcp")
    join = ":" if transport == "tcp" else "-"  # tcp://ip:port, ipc://path-port
    return f"{transport}://{info['ip']}{join}{info[f'{channel}_port']}"


def _point_link(link: Path, target: str) -> None:
    # The dial folder is host-only: a rename over the link is atomic for zmq's reconnects.
    temporary = link.with_name(f"{link.name}.new")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


# ---------------------------------------------------------------------- mounts

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, options: str) -> None:
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"cogbox-run", os.fsencode(target), b"tmpfs", flags, options.encode()) != 0:
        code = ctypes.get_errno()
        raise KernelError(f"cannot mount the kernel's runtime tmpfs: {os.strerror(code)}")


def _unmount(target: Path) -> None:
    if os.path.ismount(target):
        _libc.umount2(os.fsencode(target), _MNT_DETACH | _UMOUNT_NOFOLLOW)


def _remove_runtime(host_dir: Path) -> None:
    _unmount(host_dir / "run")
    # rmtree walks by fds and never follows links, should the unmount have failed.
    shutil.rmtree(host_dir, ignore_errors=True)


# ---------------------------------------------------------------------- reaper


def reap_stale_runtimes(base: Path | None = None) -> list[str]:
    """Remove the runtime folders nobody holds (their service was killed); their names.

    A live `RuntimeDir` holds an flock on its folder, so a folder that can be locked is
    stale: its tmpfs is unmounted and the folder (key, logs) removed. Folders of the
    format before the lock (`/run/cogbox/s/<id>` and `<id>.log`) are removed only once
    older than a day, since kernels of older code may still use them.
    """
    base = base or runtime_base()
    reaped: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(base.iterdir()):
            if _reap_runtime(entry):
                reaped.append(entry.name)
    old_base = base.with_name("s")
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(old_base.iterdir()):
            if _reap_old_format(entry):
                reaped.append(entry.name)
    return reaped


def _reap_runtime(entry: Path) -> bool:
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # removed meanwhile, or not a folder
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
        # A staging folder is unlocked for a moment after its mkdir: only an old one is
        # surely abandoned.
        age = time.time() - os.fstat(fd).st_mtime
        if entry.name.startswith(_STAGING_PREFIX) and age < _STAGING_MAX_AGE_SECONDS:
            return False
        _remove_runtime(entry)
        return not entry.exists()
    finally:
        os.close(fd)


def _reap_old_format(entry: Path) -> bool:
    try:
        info = entry.lstat()
    except FileNotFoundError:
        return False
    if time.time() - info.st_mtime < _OLD_FORMAT_MAX_AGE_SECONDS:
        return False
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
    return not os.path.lexists(entry)


_reaped_bases: set[Path] = set()
_reap_lock = threading.Lock()


def _reap_once(base: Path) -> None:
    # Once per process and base, like the launcher's bundles: what a killed predecessor
    # left is found at the first kernel start. Best effort: never keeps a kernel from
    # starting.
    with _reap_lock:
        if base in _reaped_bases:
            return
        _reaped_bases.add(base)
    with contextlib.suppress(OSError):
        reap_stale_runtimes(base)
