"""Keypair and session rows served from memory, never staler than the database.

Every request reads its keypair (to verify the signature) and most read a session. Reading
them from the database each time cost three transactions per request; caching them for a
while would let a removed keypair or a destroyed session act for that while. Instead the
memo is invalidated on the change itself:

- Every write to the keypairs or sessions tables, by any process (`cogbox keypair rm`, a
  second service), bumps one generation counter row in the same transaction
  (`cogbox.service.db`). A memoised row may be used only while the generation it was read
  under is still the database's, so a change committed anywhere is seen by the next request.
- Asking the database for the generation on every request would be a query again. With a
  SQLite file the memo first asks `PRAGMA data_version` on a connection of its own, which
  changes exactly when another connection committed to the file since the last ask; it reads
  a shared-memory header (no page, no lock wait under WAL), a few microseconds, so it is
  asked inline on the event loop, no thread hand-off. Only when it changed is the generation
  row read (one indexed row, same connection), and only when that changed are rows dropped,
  so writes to other tables (events, seen signatures) keep the memo.
- Another database (PostgreSQL) has no such cheap signal in its driver; there the
  generation row is read (one primary-key lookup, no ORM) on a thread before a memoised
  row is used. LISTEN/NOTIFY would save that query but needs a connection held open and a
  listener task per process, and would still need the counter to close the window between
  a notification and its delivery; the counter alone is correct, and cheap enough.
- This process's own writes drop the rows at once too (`invalidate`), and a row read
  before a drop is not stored after it (`epoch`), so a concurrent read cannot put a stale
  row back.

Only rows found are memoised (an unknown key still reaches the database each time), and the
memo holds at most `MAX_ROWS` rows (past that it starts over).
"""

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_ROWS = 20_000
_GENERATION_SQL = "SELECT value FROM cogbox_generation WHERE id = 1"


class Memo:
    """Rows by (kind, key), valid for one database generation. Thread-safe."""

    def __init__(self, read_generation: Callable[[], int], sqlite_path: Path | None) -> None:
        self._read_generation = read_generation
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], Any] = {}
        self._epoch = 0
        self._generation: int | None = None  # the generation the rows were read under
        self._data_version: int | None = None
        self._watch: sqlite3.Connection | None = None
        if sqlite_path is not None:
            self._watch = sqlite3.connect(
                f"file:{quote(str(sqlite_path))}",
                uri=True,
                timeout=1.0,
                isolation_level=None,
                check_same_thread=False,
            )

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def epoch(self) -> int:
        """Pass to `put`: a row read after this call is stored only if nothing was dropped
        in between."""
        return self._epoch

    def invalidate(self) -> None:
        """This process wrote keypairs or sessions: forget every row."""
        with self._lock:
            self._drop()
            self._generation = None

    def get(self, kind: str, key: str) -> Any:
        """The memoised row if still current, else None (may read the generation)."""
        if self._watch is None:
            generation = self._read_generation()
            with self._lock:
                self._adopt(generation)
                return self._rows.get((kind, key))
        with self._lock:
            return self._rows.get((kind, key)) if self._check_sqlite() else None

    def get_inline(self, kind: str, key: str) -> Any:
        """`get` without anything that could block: None where only a query could tell."""
        if self._watch is None:
            return None
        with self._lock:
            return self._rows.get((kind, key)) if self._check_sqlite() else None

    def put(self, kind: str, key: str, row: Any, epoch: int) -> None:
        with self._lock:
            if epoch != self._epoch:
                return  # dropped since the row was read: it may be stale
            if len(self._rows) >= MAX_ROWS:
                self._rows.clear()
            self._rows[(kind, key)] = row

    def _check_sqlite(self) -> bool:
        """Whether the rows are current (under the lock); False when the file could not be
        asked (then the caller reads the database, as without a memo)."""
        assert self._watch is not None
        try:
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version and self._generation is not None:
                return True
            generation = self._watch.execute(_GENERATION_SQL).fetchone()[0]
        except sqlite3.Error:
            self._drop()
            self._generation = self._data_version = None
            return False
        self._adopt(int(generation))
        self._data_version = version
        return True

    def _adopt(self, generation: int) -> None:
        if generation != self._generation:
            self._drop()
            self._generation = generation

    def _drop(self) -> None:
        self._rows.clear()
        self._epoch += 1
