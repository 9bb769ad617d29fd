"""OP_CHMOD path rules: a seccomp user-notification supervisor that answers the jail's chmods."""

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import posixpath
import select
import socket
import struct
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

# ioctls on a seccomp listener fd (linux/seccomp.h, magic '!'): RECV is
# _IOWR('!', 0, struct seccomp_notif), SEND _IOWR('!', 1, struct seccomp_notif_resp),
# ID_VALID _IOW('!', 2, __u64).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
USER_NOTIF_FLAG_CONTINUE = 1
# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data {i32 nr; u32 arch;
# u64 instruction_pointer; u64 args[6]}} (80 bytes) and struct seccomp_notif_resp
# {u64 id; s64 val; s32 error; u32 flags} (24 bytes).
NOTIF = struct.Struct("=QIIiIQ6Q")
RESPONSE = struct.Struct("=QqiI")

AUDIT_ARCH_X86_64 = 0xC000003E
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096
_PAGE = 4096
# x86_64 number -> (index of the dirfd argument or None, index of the path, index of flags).
_CALLS: dict[int, tuple[int | None, int, int | None]] = {
    90: (None, 0, None),  # chmod(path, mode)
    268: (0, 1, None),  # fchmodat(dirfd, path, mode)
    452: (0, 1, 3),  # fchmodat2(dirfd, path, mode, flags)
}
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the final NUL
_STOP_TIMEOUT_SECONDS = 5.0
_HANDOVER_TIMEOUT_SECONDS = 5.0


def resolve_lexically(path: str, base: str) -> str:
    """`path` made absolute against directory `base`, with `.`, `..`, `//` and a trailing `/`
    folded away by spelling alone, as the rules are written (no symlinks are followed)."""
    joined = path if path.startswith("/") else f"{base}/{path}"
    return "/" + posixpath.normpath(joined).lstrip("/")  # normpath keeps a leading "//"


def glob_covers(target: str, globs: Iterable[str]) -> bool:
    """Whether an absolute, normalised `target` matches one of OP_CHMOD's `globs`.

    `*` crosses `/` (fnmatch, as Backend.AI matched), and `D/*` also covers `D` itself, so
    `/home/work/*` allows chmod of /home/work as Backend.AI's jail did.
    """
    for glob in globs:
        pattern = glob.strip()
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatch.fnmatchcase(target, pattern):
            return True
        directory = pattern.rstrip("*").rstrip("/") or "/"
        if pattern.endswith("/*") and target == directory:
            return True
    return False


def chmod_allowed(path: str, cwd: str, globs: Iterable[str]) -> bool:
    """Whether OP_CHMOD's `globs` allow chmod of `path` for a process whose cwd is `cwd`."""
    return glob_covers(resolve_lexically(path, cwd), globs)


class ChmodGuard:
    """Answers one jail's chmod calls by `globs`; runc connects to `socket_path` at start.

    The socket is `directory`/chmod.sock (the jail's bundle), or sits in a private temporary
    directory when that path would be too long for a unix socket.

    The jail's filter sends `chmod`, `fchmodat` and `fchmodat2` here (`SCMP_ACT_NOTIFY`), and
    runc passes the filter's listener fd over `socket_path` (`linux.seccomp.listenerPath`).
    Each path is read from the caller's memory, resolved lexically against its cwd or dirfd,
    and answered with EPERM unless `globs` cover it; else the kernel carries the call out
    (CONTINUE) with its normal permission checks, on the path as it reads it itself. So
    CONTINUE never grants more than file ownership allows: a thread that rewrites the path
    after the check, or a symlink the lexical view does not follow, only changes the errno.

    `start()` listens before `runc run` is started (runc fails the start if nobody listens);
    `stop()` ends the thread and closes the listener fd, after which the kernel answers any
    chmod still in the jail with ENOSYS, so a jail can never hang on a missing supervisor.
    """

    def __init__(self, directory: Path, globs: Sequence[str]) -> None:
        self.socket_path = directory / "chmod.sock"
        self._own_directory: Path | None = None
        if len(os.fsencode(self.socket_path)) > SOCKET_PATH_MAX:
            self._own_directory = Path(tempfile.mkdtemp(prefix="cogbox-chmod-"))  # mode 0700
            self.socket_path = self._own_directory / "chmod.sock"
        self.globs = tuple(globs)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_read = -1
        self._wake_write = -1

    def start(self) -> None:
        """Listen on `socket_path` and start answering in a daemon thread."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)  # only root (runc) may hand us a listener fd
            listener.listen(4)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="cogbox-chmod-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and release everything; safe to call more than once."""
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")
            self._thread.join(_STOP_TIMEOUT_SECONDS)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_read = self._wake_write = -1
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._own_directory is not None:
            with contextlib.suppress(OSError):
                self._own_directory.rmdir()

    # ------------------------------------------------------------------ the thread

    def _serve(self) -> None:
        assert self._listener is not None
        listener_fd = self._listener.fileno()
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        poller.register(listener_fd, select.POLLIN)
        notify_fds: set[int] = set()
        try:
            while True:
                for fd, events in poller.poll():
                    if fd == self._wake_read:
                        return
                    if fd == listener_fd:
                        received = self._accept_listener_fd()
                        if received is not None:
                            notify_fds.add(received)
                            poller.register(received, select.POLLIN)
                    elif events & select.POLLIN:
                        if not self._answer(fd):
                            poller.unregister(fd)
                            notify_fds.discard(fd)
                            os.close(fd)
                    else:  # POLLHUP: no process of the jail uses the filter any more
                        poller.unregister(fd)
                        notify_fds.discard(fd)
                        os.close(fd)
        finally:
            # Closing the listener makes the kernel answer waiting and future calls with
            # ENOSYS, so nothing in the jail waits for a supervisor that is gone.
            for fd in notify_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _accept_listener_fd(self) -> int | None:
        # runc sends its container state JSON, whose "fds" names the fds passed alongside
        # with SCM_RIGHTS; the one named "seccompFd" is the filter's listener.
        assert self._listener is not None
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return None
        fds: list[int] = []
        with connection:
            connection.settimeout(_HANDOVER_TIMEOUT_SECONDS)
            try:
                message, ancillary, _, _ = connection.recvmsg(
                    1 << 16, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
                )
            except OSError:
                return None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % 4
                fds.extend(struct.unpack(f"={usable // 4}i", data[:usable]))
        chosen: int | None = None
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            names = json.loads(message)["fds"]
            if names.count("seccompFd") == 1 and names.index("seccompFd") < len(fds):
                chosen = fds[names.index("seccompFd")]
        for fd in fds:
            if fd != chosen:
                os.close(fd)
        return chosen

    def _answer(self, fd: int) -> bool:
        """Receive and answer one notification; False when `fd` is no longer usable."""
        buffer = bytearray(NOTIF.size)  # RECV wants it zeroed
        try:
            fcntl.ioctl(fd, NOTIF_RECV, buffer, True)
        except OSError as exc:
            # ENOENT: the caller was interrupted or died between poll and receive.
            return exc.errno in (errno.ENOENT, errno.EINTR)
        notification_id, pid, _, number, arch, _, *args = NOTIF.unpack(buffer)
        try:
            error = self._decide(pid, number, arch, args)
        except Exception:  # a bug here must refuse one chmod, never stall the jail
            error = errno.EPERM
        try:
            # /proc/<pid> may name another process once the caller is gone: only answer
            # (and so only trust what was read) if the notification is still live.
            fcntl.ioctl(fd, NOTIF_ID_VALID, struct.pack("=Q", notification_id))
            flags = USER_NOTIF_FLAG_CONTINUE if error == 0 else 0
            fcntl.ioctl(fd, NOTIF_SEND, RESPONSE.pack(notification_id, 0, -error, flags))
        except OSError as exc:
            return exc.errno in (errno.ENOENT, errno.EINTR)
        return True

    def _decide(self, pid: int, number: int, arch: int, args: list[int]) -> int:
        """0 to let the kernel carry the call out, else the errno to answer with."""
        call = _CALLS.get(number)
        if call is None or arch != AUDIT_ARCH_X86_64:
            return errno.EPERM
        dirfd_index, path_index, flags_index = call
        path = _read_path(pid, args[path_index])
        if isinstance(path, int):
            return path  # what the kernel would answer: EFAULT or ENAMETOOLONG
        flags = args[flags_index] if flags_index is not None else 0
        if not path and not flags & AT_EMPTY_PATH:
            return errno.ENOENT
        base = "/"
        if not path.startswith("/"):
            dirfd = _signed32(args[dirfd_index]) if dirfd_index is not None else AT_FDCWD
            link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
            try:
                # The caller's cwd or dirfd as a path in the jail's mount namespace, which is
                # what the rules are written in.
                base = os.readlink(link)
            except (OSError, ValueError):
                return errno.EPERM
            if not base.startswith("/"):
                return errno.EPERM  # a pipe, socket or other fd that is no directory
        return 0 if chmod_allowed(path, base, self.globs) else errno.EPERM


def _read_path(pid: int, address: int) -> str | int:
    """The NUL-terminated string at `address` in `pid`, or the errno the kernel would give."""
    try:
        mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return errno.EPERM
    data = b""
    try:
        while len(data) < PATH_MAX:
            # Page by page: a string ending just before an unmapped page is still readable.
            size = min(_PAGE - (address + len(data)) % _PAGE, PATH_MAX - len(data))
            chunk = os.pread(mem, size, address + len(data))
            if not chunk:
                return errno.EFAULT
            end = chunk.find(b"\0")
            if end >= 0:
                return os.fsdecode(data + chunk[:end])
            data += chunk
    except (OSError, OverflowError):
        return errno.EFAULT
    finally:
        os.close(mem)
    return errno.ENAMETOOLONG


def _signed32(value: int) -> int:
    # dirfd is a C int: the kernel looks at the low 32 bits only.
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
