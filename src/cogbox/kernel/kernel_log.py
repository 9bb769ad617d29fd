"""The kernel process's own stdout/stderr: a pipe drained into a capped, rotated host file.

The jail holds only the write end of a pipe, never a file of the host: a kernel writing
endlessly to its fd 1/2 costs the host at most `2 * cap` bytes of disk (`kernel.log`, and
`kernel.log.1` before it) and never blocks, because a thread reads the pipe as fast as it
is written and drops what falls off the end. The files live in the kernel's host-only
folder, which the jail cannot see.
"""

import contextlib
import fcntl
import os
import select
import threading
from pathlib import Path

from cogbox.kernel.stop_signal import StopSignal

LOG_CAP_BYTES = 1 << 20  # per file: the current log and one previous
_PIPE_BYTES = 1 << 20
_READ_BYTES = 1 << 20
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class KernelLog:
    """One kernel's log: `writer` goes to the jail as fd 1 and 2; `tail()` reads the end."""

    def __init__(self, path: Path, cap: int = LOG_CAP_BYTES) -> None:
        self.path = path
        self.previous = path.with_name(path.name + ".1")
        self.cap = cap
        reader, self.writer = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # fewer wake-ups under a flood
            fcntl.fcntl(self.writer, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._stop = StopSignal()
        self._lock = threading.Lock()  # rotation against tail()
        self._file = os.open(path, _FILE_FLAGS, 0o600)
        self._written = 0
        self._thread = threading.Thread(
            target=self._drain, args=(reader,), name="cogbox-kernel-log", daemon=True
        )
        self._thread.start()

    def close_writer(self) -> None:
        """Once the jail holds its copy: the pipe then ends when the jail's processes do."""
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading (the jail ended); what it wrote so far stays in the files."""
        self.close_writer()
        self._stop.set()
        self._thread.join(timeout)

    def tail(self, limit: int) -> str:
        """The last `limit` bytes the kernel wrote (across the rotation), as text."""
        with self._lock:
            data = b""
            for path in (self.path, self.previous):
                with contextlib.suppress(OSError):
                    data = _read_end(path, limit - len(data)) + data
                if len(data) >= limit:
                    break
        return data.decode(errors="replace").strip()

    def _drain(self, reader: int) -> None:
        try:
            while True:
                ready = select.select([reader, self._stop.fd], [], [])[0]
                if reader not in ready:
                    return  # stopped
                chunk = os.read(reader, _READ_BYTES)
                if not chunk:
                    return  # every writer (the jail's processes) is gone
                self._append(chunk)
        except OSError:
            return  # the log's folder was removed: nothing left to keep
        finally:
            os.close(reader)
            self._stop.close()
            with contextlib.suppress(OSError):
                os.close(self._file)

    def _append(self, chunk: bytes) -> None:
        while self._written + len(chunk) > self.cap:
            room = self.cap - self._written
            os.write(self._file, chunk[:room])
            chunk = chunk[room:]
            with self._lock:
                os.close(self._file)
                os.replace(self.path, self.previous)
                self._file = os.open(self.path, _FILE_FLAGS, 0o600)
            self._written = 0
        os.write(self._file, chunk)
        self._written += len(chunk)


def read_tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of the log at `path` (across the rotation), from any process:
    the kernel's monitor writes it, its owner reads it."""
    data = b""
    for part in (path, path.with_name(path.name + ".1")):
        with contextlib.suppress(OSError):
            data = _read_end(part, limit - len(data)) + data
        if len(data) >= limit:
            break
    return data.decode(errors="replace").strip()


def _read_end(path: Path, limit: int) -> bytes:
    if limit <= 0:
        return b""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - limit))
        return handle.read()
