"""The service's hot path: rows from memory that a change in any process invalidates at once,
the in-memory replay window that a restart (and a second process) still honours, and the
fair bound on cold starts. Real SQLite files and real processes; nothing mocked."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cogbox.kernel.start_gate import StartGate
from cogbox.service.db import Database, SessionRecord
from cogbox.service.errors import ServiceError
from cogbox.service.keypairs import create_keypair
from cogbox.service.replay import ReplayWindow


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cogbox.db'}"


def _session(access_key: str, status: str = "running") -> SessionRecord:
    now = time.time()
    return SessionRecord(
        id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
        name="s",
        access_key=access_key,
        image="python",
        status=status,
        status_info="",
        created_at=now,
        status_changed_at=now,
        terminated_at=None,
        idle_timeout=60,
        max_lifetime=60,
        workdir="/nonexistent",
    )


def test_a_keypair_removed_by_another_process_is_refused_by_the_next_lookup(
    tmp_path: Path,
) -> None:
    db = Database(_url(tmp_path))
    keypair = create_keypair(db)
    assert db.get_keypair(keypair.access_key) == keypair
    assert db.cached_keypair(keypair.access_key) == keypair  # from memory, no thread
    remove = (
        "import sys; from cogbox.service.db import Database; "
        "assert Database(sys.argv[1]).remove_keypair(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", remove, _url(tmp_path), keypair.access_key], check=True)
    assert db.cached_keypair(keypair.access_key) is None
    assert db.get_keypair(keypair.access_key) is None
    assert db.cached_active(keypair.access_key) is None


def test_a_session_changed_by_another_connection_is_read_anew(tmp_path: Path) -> None:
    db = Database(_url(tmp_path))
    other = Database(_url(tmp_path))  # a second service, or the CLI, on the same file
    keypair = create_keypair(db)
    record = _session(keypair.access_key)
    db.add_session(record)
    assert db.get_session(record.id) == record
    assert db.cached_session(record.id) == record
    other.update_session(record.id, status="terminated")
    assert db.cached_session(record.id) is None
    fresh = db.get_session(record.id)
    assert fresh is not None and fresh.status == "terminated"


def test_own_writes_drop_memoised_rows_at_once(tmp_path: Path) -> None:
    db = Database(_url(tmp_path))
    keypair = create_keypair(db)
    record = _session(keypair.access_key)
    db.add_session(record)
    assert db.get_session(record.id) == record
    db.update_session(record.id, status="terminated")
    assert db.cached_session(record.id) is None
    assert db.remove_keypair(keypair.access_key)
    assert db.get_keypair(keypair.access_key) is None


def test_writes_to_other_tables_keep_the_memo(tmp_path: Path) -> None:
    db = Database(_url(tmp_path))
    keypair = create_keypair(db)
    db.get_keypair(keypair.access_key)
    Database(_url(tmp_path)).add_event("some-session", "created")
    assert db.cached_keypair(keypair.access_key) == keypair


def test_a_replay_is_refused_by_a_restarted_window_and_by_a_second_process(
    tmp_path: Path,
) -> None:
    signature = "ab" * 32
    until = time.time() + 100
    first = ReplayWindow(tmp_path)
    second = ReplayWindow(tmp_path)  # another service process on the same folder
    assert first.accept(signature, until)
    assert not first.accept(signature, until)
    assert not second.accept(signature, until)
    first.close()
    restarted = ReplayWindow(tmp_path)
    assert not restarted.accept(signature, until)
    assert restarted.accept("cd" * 32, until)


def test_expired_signatures_are_forgotten_and_the_file_compacted(tmp_path: Path) -> None:
    window = ReplayWindow(tmp_path)
    assert window.accept("ab" * 32, time.time() - 1)  # already past its window
    assert window.accept("ab" * 32, time.time() + 100)  # so it is not a replay
    window.close()
    ReplayWindow(tmp_path).close()
    lines = (tmp_path / "seen-signatures").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ab" * 32)
    assert (tmp_path / "seen-signatures").stat().st_mode & 0o777 == 0o600


def test_a_full_window_refuses_instead_of_forgetting(tmp_path: Path) -> None:
    window = ReplayWindow(tmp_path, max_entries=2)
    until = time.time() + 100
    assert window.accept("01" * 32, until)
    assert window.accept("02" * 32, until)
    with pytest.raises(ServiceError) as raised:
        window.accept("03" * 32, until)
    assert raised.value.status == 503
    assert not window.accept("01" * 32, until)  # still remembered


@pytest.mark.parametrize("limit", [1, 2])
def test_start_gate_bounds_concurrency_and_admits_in_arrival_order(limit: int) -> None:
    gate = StartGate(limit=limit)
    release = threading.Event()
    order: list[int] = []
    peak = 0
    lock = threading.Lock()

    def start(number: int) -> int:
        nonlocal peak
        with lock:
            order.append(number)
            peak = max(peak, gate.running)
        release.wait(10)
        return number

    threads = []
    for number in range(8):
        thread = threading.Thread(target=gate.run, args=(lambda n=number: start(n),))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5  # each arrives after the one before is queued
        while gate.running + gate.waiting < number + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert gate.running == limit and gate.waiting == 8 - limit
    release.set()
    for thread in threads:
        thread.join(10)
    assert peak == limit
    if limit == 1:  # one at a time: the order they ran in is the order they were let in
        assert order == list(range(8))
    else:  # the first ones in were the first to arrive
        assert sorted(order[:limit]) == list(range(limit))
    assert gate.running == 0 and gate.waiting == 0


def test_the_cold_start_bound_is_three_per_core_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cogbox.kernel.start_gate import LIMIT_ENV, default_limit

    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert default_limit() == 3 * len(os.sched_getaffinity(0))
    monkeypatch.setenv(LIMIT_ENV, "5")
    assert StartGate().limit == 5
    monkeypatch.setenv(LIMIT_ENV, "many")
    with pytest.raises(ValueError, match=LIMIT_ENV):
        default_limit()
