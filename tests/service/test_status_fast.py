"""A session's status is one enum (service/status.py), stored as the plain string it always
was, read back as the enum, and named by every API surface's own vocabulary."""

import sqlite3
import time
from pathlib import Path

from cogbox.service.backendai_status import STATUS
from cogbox.service.db import Database, SessionRecord
from cogbox.service.status import ACTIVE, ENDED, SessionStatus

SESSION_ID = "0" * 8 + "-0000-0000-0000-" + "0" * 12


def test_a_status_is_stored_as_its_plain_string_and_read_back_as_the_enum(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cogbox.db'}")
    now = time.time()
    record = SessionRecord(
        SESSION_ID, "s", "AKTEST", "python", SessionStatus.DEAD, "", now, now, None, 60, 60, "/w"
    )
    db.add_session(record)
    db.update_session(SESSION_ID, status=SessionStatus.LOST)
    with sqlite3.connect(tmp_path / "cogbox.db") as raw:
        stored = raw.execute("SELECT status, typeof(status) FROM sessions").fetchall()
    read = db.get_session(SESSION_ID)
    db.close()
    assert (stored, read and type(read.status), read and read.status) == (
        [("lost", "text")],
        SessionStatus,
        SessionStatus.LOST,
    )


def test_every_status_is_active_or_ended_and_has_a_backendai_name() -> None:
    assert (set(ACTIVE) | set(ENDED), set(ACTIVE) & set(ENDED), set(STATUS)) == (
        set(SessionStatus),
        set(),
        set(SessionStatus),
    )
