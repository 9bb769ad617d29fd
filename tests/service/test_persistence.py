"""Persistence: keypairs, sessions and events survive a restart of the service; a session
whose kernel was lost is reported `lost` (never forgotten) and its files stay downloadable.
Run against SQLite and against a real PostgreSQL server."""

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cogbox.images.store import Image
from cogbox.service.db import Database
from tests.service.support import Service, free_port, needs_runc


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own (initdb + pg_ctl as the postgres user), stopped after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None or os.geteuid() != 0:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
    home = Path(tempfile.mkdtemp(prefix="cogbox-pg-", dir="/tmp"))
    shutil.chown(home, "postgres")
    data, port = home / "data", free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    as_postgres(initdb, "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    as_postgres(pg_ctl, "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _session_survives_restart_as_lost(service: Service) -> None:
    service.start()
    try:
        client = service.keypair()
        session = client.create()
        ref = session["id"]
        client.execute(ref, "open('results.txt', 'w').write('trained')")
        service.stop()
        service.start()
        listed = client.request("GET", "/v1/sessions").json()["sessions"]
        events = client.request("GET", f"/v1/sessions/{ref}/events").json()["events"]
        got = client.request(
            "GET", f"/v1/sessions/{ref}/files/content", params={"path": "results.txt"}
        )
        assert [(s["id"], s["status"]) for s in listed] == [(ref, "lost")]
        assert [e["kind"] for e in events][-1] == "lost"
        assert (got.status_code, got.content) == (200, b"trained")
    finally:
        service.stop()


def test_sqlite_session_is_lost_after_restart_and_its_files_are_kept(
    python_image: Image, tmp_path: Path
) -> None:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    _session_survives_restart_as_lost(Service(tmp_path, f"sqlite:///{tmp_path / 'cogbox.db'}"))


def test_sqlite_database_is_readable_by_its_owner_only(python_image: Image, tmp_path: Path) -> None:
    service = Service(tmp_path, f"sqlite:///{tmp_path / 'cogbox.db'}")
    service.keypair()
    assert (tmp_path / "cogbox.db").stat().st_mode & 0o777 == 0o600


def test_postgresql_session_is_lost_after_restart_and_its_files_are_kept(
    python_image: Image, postgres_url: str, tmp_path: Path
) -> None:
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    _session_survives_restart_as_lost(Service(tmp_path, postgres_url))


# The keypairs and sessions tables as the first release made them (no memory columns).
_FIRST_RELEASE_TABLES = [
    "CREATE TABLE keypairs (access_key VARCHAR(64) PRIMARY KEY, secret_key VARCHAR(128), "
    "created_at FLOAT, max_sessions INTEGER, is_admin BOOLEAN, is_active BOOLEAN)",
    "CREATE TABLE sessions (id VARCHAR(36) PRIMARY KEY, name VARCHAR(128), "
    "access_key VARCHAR(64), image VARCHAR(256), status VARCHAR(32), status_info TEXT, "
    "created_at FLOAT, status_changed_at FLOAT, terminated_at FLOAT, idle_timeout FLOAT, "
    "max_lifetime FLOAT, workdir TEXT)",
    "INSERT INTO keypairs VALUES ('AKIAOLD', 'secret', 1.0, 3, false, true)",
    "INSERT INTO sessions VALUES ('00000000-0000-0000-0000-000000000000', 'old', 'AKIAOLD', "
    "'python', 'terminated', '', 1.0, 2.0, 2.0, 60.0, 600.0, '/nowhere')",
]


def _upgrade_keeps_rows(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in _FIRST_RELEASE_TABLES:
            connection.execute(text(statement))
    engine.dispose()
    db = Database(url)
    try:
        keypair = db.get_keypair("AKIAOLD")
        session = db.get_session("00000000-0000-0000-0000-000000000000")
        assert keypair is not None and session is not None
        assert (keypair.max_sessions, keypair.max_memory_bytes) == (3, None)
        assert (session.name, session.memory_bytes) == ("old", None)
        db.update_session(session.id, memory_bytes=5 << 30)  # BIGINT: past 2**31
        assert (db.get_session(session.id) or session).memory_bytes == 5 << 30
    finally:
        db.close()


def test_a_first_release_sqlite_database_gains_the_new_columns(tmp_path: Path) -> None:
    _upgrade_keeps_rows(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.slow  # a real PostgreSQL server: initdb, start, stop (~8 s)
def test_a_first_release_postgresql_database_gains_the_new_columns(postgres_url: str) -> None:
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("CREATE DATABASE first_release"))
    engine.dispose()
    _upgrade_keeps_rows(postgres_url.rsplit("/", 1)[0] + "/first_release")
