"""Sessions' full console logs: every byte of stdout/stderr, on the agent's disk, by offset.

Each session has one append-only file, `<logs_dir>/<session id>.log`, written by the host
from the kernel's output events before any cap drops them (the interactive per-run cap and
the slow-client queue only cut what a client is sent). `logs_dir` is a host-only folder of
the service's state dir: no jail can reach it or plant a name in it, and files are opened
with `O_NOFOLLOW` from its directory fd all the same. A log is bounded by `limit` bytes;
the write that reaches the limit is cut there and followed by one marker line, after which
the session's output no longer goes to its log. Readers stream it a chunk at a time from any
offset, so neither side ever holds a log in memory.

Logs live as long as the session's record: ending a session keeps its log, purging the
record (deleting a session that already ended) deletes it.
"""

import asyncio
import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

from cogbox.kernel.events import Error, Event, Stderr, Stdout
from cogbox.sizes import format_size

log = logging.getLogger(__name__)

DEFAULT_LOG_LIMIT = 1 << 30
READ_CHUNK = 1 << 16
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_name(session_id: str) -> str:
    """The log's file name: the session id, checked to be a UUID (never a path)."""
    return f"{uuid.UUID(session_id)}.log"


def limit_marker(limit: int) -> bytes:
    return (
        f"\n[cogbox: this session's log reached its limit of {format_size(limit)}; "
        "later output is not logged]\n"
    ).encode()


def event_bytes(event: Event) -> bytes:
    """What an output event adds to the console log: stdout and stderr as printed, an
    uncaught exception as its traceback (colour codes removed); nothing for rich output."""
    if isinstance(event, Stdout | Stderr):
        return event.text.encode("utf-8", "surrogateescape")
    if isinstance(event, Error):
        lines = event.traceback or [f"{event.ename}: {event.evalue}"]
        return ("\n".join(_ANSI.sub("", line) for line in lines) + "\n").encode("utf-8", "replace")
    return b""


class LogWriter:
    """Appends one session's output to its log, bounded by `limit` bytes (thread-safe: the
    kernel's thread writes while the event loop may close it)."""

    def __init__(self, logs_dir: Path, session_id: str, limit: int = DEFAULT_LOG_LIMIT) -> None:
        if limit <= 0:
            raise ValueError(f"the log limit must be a positive number of bytes, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        dir_fd = os.open(logs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._fd: int | None = os.open(log_name(session_id), _APPEND, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        self.size = os.fstat(self._fd).st_size  # a restarted kernel appends to the same log
        self.full = self.size >= limit

    def write_event(self, event: Event) -> None:
        """The kernel's output tap: never raises into the kernel's loop."""
        data = event_bytes(event)
        if data:
            self.write(data)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None or self.full:
                return
            room = self.limit - self.size
            piece = data[:room]
            try:
                os.write(self._fd, piece)
                self.size += len(piece)
                if len(data) > room:
                    self.full = True
                    os.write(self._fd, limit_marker(self.limit))
            except OSError as exc:  # a full disk must not break the session's runs
                log.warning("the session log stopped: %s", exc)
                self.full = True

    def truncate(self, size: int) -> None:
        """Cut the log back to `size` bytes (a re-attached run rewrites its output)."""
        with self._lock:
            if self._fd is not None and 0 <= size < self.size:
                os.ftruncate(self._fd, size)
                self.size = size
                self.full = size >= self.limit

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def log_size(logs_dir: Path, session_id: str) -> int | None:
    """The log's size in bytes; None when the session has no log (yet)."""
    try:
        return os.stat(logs_dir / log_name(session_id), follow_symlinks=False).st_size
    except FileNotFoundError:
        return None


def read_log(
    logs_dir: Path, session_id: str, offset: int = 0, length: int | None = None
) -> Generator[bytes, None, None]:
    """The log from `offset` on (at most `length` bytes), a chunk at a time, up to its size
    when the call began; nothing if the session has no log."""
    try:
        fd = os.open(logs_dir / log_name(session_id), _READ)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size
        if length is not None:
            end = min(end, offset + length)
        while offset < end:
            chunk = os.pread(fd, min(READ_CHUNK, end - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


async def stream_log(
    logs_dir: Path, session_id: str, offset: int = 0, length: int | None = None
) -> AsyncIterator[bytes]:
    """`read_log` for the event loop: each chunk is read in a worker thread."""
    chunks = read_log(logs_dir, session_id, offset, length)
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()


def remove_log(logs_dir: Path, session_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(logs_dir / log_name(session_id))
