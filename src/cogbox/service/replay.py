"""Replay protection: the signatures seen within the clock-skew window, in memory, backed by
an append-only file that a restart reads back.

A signed request may be used once. A signature stays refusable for as long as its date can
still pass the skew check (its date + skew + 1 s), and no longer. It used to be a database
transaction per request (read, insert, commit, on a thread behind the database's lock); now:

- The window is a dict in memory (signature -> expiry), checked inline on the event loop.
- Each accepted signature is appended to `seen-signatures` in the service's folder (one
  `write` on an O_APPEND descriptor, ~2 us): the page cache keeps it through a SIGKILL of
  the service, and the next start reads the file back (dropping what expired, then
  rewriting it compacted), so a request used before the kill is refused after the restart.
  A crash of the whole host may lose the last appends; the host's reboot takes longer than
  few of those requests' windows would, and their dates still pass through the skew check.
- Several service processes on one service folder share the file: under an exclusive
  `flock` each reads what the others appended since its last look (usually nothing: one
  `fstat`), checks, then appends, so a signature is accepted by one of them only, as the
  database's unique key used to ensure. Processes on other hosts sharing a PostgreSQL
  database each keep their own window (run them on one shared service folder). A restart
  compacts the file in place; a process that reads it in the instant of a compaction may
  miss the lines appended then (it skips what it cannot parse).
- The window is bounded: at most `max_entries` unexpired signatures (expired ones are purged
  as it goes). A request that would exceed it is refused with 503, never let through
  unrecorded.

Signatures are stored as their 32 raw bytes (hex in the file, one per line with its expiry).
"""

import contextlib
import fcntl
import heapq
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cogbox.service.errors import ServiceError

FILE_NAME = "seen-signatures"
DEFAULT_MAX_ENTRIES = 1 << 19  # ~290 signed requests/s sustained at the default 900 s skew
_PURGE_INTERVAL_S = 30.0


class ReplayWindow:
    """The signatures seen and not yet expired; `accept` records a new one."""

    def __init__(self, directory: Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = directory / FILE_NAME
        self._max = max_entries
        self._seen: dict[bytes, float] = {}
        self._expiries: list[tuple[float, bytes]] = []  # a heap, for purging in order
        self._next_purge = 0.0
        self._fd = os.open(
            self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        with self._locked():
            self._offset = 0
            self._read_new(time.time())
            self._compact(time.time())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def accept(self, signature: str, expires_at: float) -> bool:
        """Record `signature` until `expires_at`; False if it was seen and has not expired."""
        now = time.time()
        key = bytes.fromhex(signature)
        if self._seen.get(key, 0.0) > now:
            return False  # the common replay, refused without touching the file
        with self._locked():
            self._read_new(now)
            if self._seen.get(key, 0.0) > now:
                return False
            if now >= self._next_purge or len(self._seen) >= self._max:
                self._purge(now)
            if len(self._seen) >= self._max:
                raise ServiceError(
                    503,
                    "replay-window-full",
                    "too many signed requests within the clock-skew window: retry shortly",
                )
            line = f"{signature} {expires_at:.3f}\n".encode()
            os.write(self._fd, line)
            self._offset += len(line)
            self._add(key, expires_at)
        return True

    def _add(self, key: bytes, expires_at: float) -> None:
        self._seen[key] = expires_at
        heapq.heappush(self._expiries, (expires_at, key))

    def _purge(self, now: float) -> None:
        self._next_purge = now + _PURGE_INTERVAL_S
        while self._expiries and self._expiries[0][0] <= now:
            expiry, key = heapq.heappop(self._expiries)
            if self._seen.get(key) == expiry:
                del self._seen[key]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read_new(self, now: float) -> None:
        """Take in what other processes appended since the last look (under the lock)."""
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            self._offset = 0  # another process compacted the file: read it whole again
        if size == self._offset:
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1  # a torn last line (a kill mid-write) is skipped
        self._offset += end
        for line in data[:end].splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            with contextlib.suppress(ValueError):
                expiry = float(parts[1])
                if expiry > now:
                    self._add(bytes.fromhex(parts[0].decode()), expiry)

    def _compact(self, now: float) -> None:
        """Rewrite the file with the unexpired signatures only (at start, under the lock)."""
        self._purge(now)
        lines = b"".join(
            f"{key.hex()} {expiry:.3f}\n".encode() for key, expiry in self._seen.items()
        )
        os.ftruncate(self._fd, 0)
        os.write(self._fd, lines)
        os.fsync(self._fd)
        self._offset = len(lines)
