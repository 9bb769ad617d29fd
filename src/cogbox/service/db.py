"""Persistence: keypairs, sessions, their events and storage folders, in SQL (SQLite by
default, or PostgreSQL). Recently seen request signatures live in `cogbox.service.replay`.

A sync SQLAlchemy engine; the async service calls it through `asyncio.to_thread`. Callers see
plain frozen records, never ORM objects. Times are Unix seconds (floats), portable across
databases. A SQLite file is made readable by its owner only: it holds keypairs' secrets,
which HMAC signing needs in the clear. It is created 0600 before SQLite opens it and SQLite
gives its -wal, -shm and -journal files the main file's mode, so the modes are set once at
open, not after every transaction.

Keypairs and sessions, read on every request, are served from memory (`cogbox.service.memo`):
every write to either table bumps a generation counter row in the same transaction, and a
memoised row is used only while the generation it was read under is still the database's.
See that module for how the check stays cheap and why it is immediate across processes.
"""

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cogbox.service.memo import Memo
from cogbox.service.status import SessionStatus

_GENERATION_ROW = 1


class _Base(DeclarativeBase):
    pass


class _Keypair(_Base):
    __tablename__ = "keypairs"
    access_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    max_sessions: Mapped[int] = mapped_column(Integer)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Added after the first release: nullable, so older databases gain them in place.
    max_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class _Session(_Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    access_key: Mapped[str] = mapped_column(String(64), index=True)
    image: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32), index=True)
    status_info: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    status_changed_at: Mapped[float] = mapped_column(Float)
    terminated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_timeout: Mapped[float] = mapped_column(Float)
    max_lifetime: Mapped[float] = mapped_column(Float)
    workdir: Mapped[str] = mapped_column(Text)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Batch sessions (jobs), added later: nullable, NULL meaning an interactive session.
    session_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    startup_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    dependencies: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of ids
    batch_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)


class _Generation(_Base):
    """One row, bumped by every write to keypairs or sessions: what memoised rows check."""

    __tablename__ = "cogbox_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class _Event(_Base):
    __tablename__ = "session_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")


class _VFolder(_Base):
    """A storage folder (Backend.AI's vfolder): its files live in its own quota filesystem
    under the service's folder (`cogbox.service.vfolders`)."""

    __tablename__ = "vfolders"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    access_key: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    permission: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[float] = mapped_column(Float)


class _VFolderMount(_Base):
    """A folder mounted into a session (held while that session is active)."""

    __tablename__ = "vfolder_mounts"
    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    folder_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)


@dataclass(frozen=True)
class KeypairRecord:
    access_key: str
    secret_key: str
    created_at: float
    max_sessions: int
    is_admin: bool
    is_active: bool
    max_memory_bytes: int | None = None  # the memory all its active sessions may hold


@dataclass(frozen=True)
class SessionRecord:
    id: str
    name: str
    access_key: str
    image: str
    status: SessionStatus
    status_info: str
    created_at: float
    status_changed_at: float
    terminated_at: float | None
    idle_timeout: float
    max_lifetime: float
    workdir: str
    memory_bytes: int | None = None  # its jail's memory limit
    session_type: str | None = None  # "batch" for a job; None (or "interactive") otherwise
    startup_command: str | None = None  # a job's command
    dependencies: str | None = None  # a job's dependencies: a JSON list of session ids
    batch_timeout: float | None = None  # a job's time limit, seconds
    result: str | None = None  # a job's outcome once it ended: SUCCESS or FAILURE
    exit_code: int | None = None  # a job's command's exit status

    def __post_init__(self) -> None:
        # The table holds the plain string: a record read back has the enum all the same.
        object.__setattr__(self, "status", SessionStatus(self.status))

    @property
    def is_batch(self) -> bool:
        return self.session_type == "batch"


@dataclass(frozen=True)
class VFolderRecord:
    id: str
    access_key: str
    name: str
    quota_bytes: int
    permission: str  # "rw" or "ro": how sessions mount it
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    session_id: str
    at: float
    kind: str
    reason: str
    message: str


def _record(row: Any, cls: Any) -> Any:
    return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


class Database:
    """The service's tables behind a few typed calls (thread-safe)."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self._sqlite_path: Path | None = None
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            connect_args["check_same_thread"] = False
            connect_args["timeout"] = 30
            if parsed.database and parsed.database != ":memory:":
                self._sqlite_path = Path(parsed.database)
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Created 0600 before SQLite opens it, so the secrets are never readable.
                fd = os.open(self._sqlite_path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if self._sqlite_path is not None:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; serialising here avoids "database is locked" retries.
        self._lock = threading.Lock()
        _Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        with contextlib.suppress(IntegrityError), self.engine.begin() as connection:
            if connection.execute(select(_GEN.c.value)).first() is None:
                # Another process opening a new database at once may insert it first.
                connection.execute(insert(_GEN).values(id=_GENERATION_ROW, value=0))
        self._protect_files()
        self.memo = Memo(self._read_generation, self._sqlite_path)

    def _protect_files(self) -> None:
        if self._sqlite_path is None:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(str(self._sqlite_path) + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)

    @contextlib.contextmanager
    def _session(self, *, bump: bool = False) -> Iterator[Session]:
        """A transaction; `bump`: it writes keypairs or sessions, so memoised rows go."""
        with self._lock, Session(self.engine, expire_on_commit=False) as session:
            yield session
            if bump:
                session.execute(_BUMP)
            session.commit()
        if bump:
            self.memo.invalidate()

    def _read_generation(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(_READ_GENERATION).scalar_one())

    def close(self) -> None:
        self.memo.close()
        self.engine.dispose()

    # ------------------------------------------------------------------ keypairs

    def add_keypair(self, record: KeypairRecord) -> None:
        with self._session(bump=True) as db:
            db.add(_Keypair(**record.__dict__))

    def get_keypair(self, access_key: str) -> KeypairRecord | None:
        found = self.memo.get("keypair", access_key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        epoch = self.memo.epoch()
        with self.engine.connect() as connection:
            row = connection.execute(_KEYPAIR_BY_KEY, {"key": access_key}).first()
        if row is None:
            return None
        record = _record(row, KeypairRecord)
        self.memo.put("keypair", access_key, record, epoch)
        return record  # type: ignore[no-any-return]

    def cached_keypair(self, access_key: str) -> KeypairRecord | None:
        """The keypair if memoised and still current, checked without blocking (None: ask
        `get_keypair` on a thread)."""
        return self.memo.get_inline("keypair", access_key)  # type: ignore[no-any-return]

    def list_keypairs(self) -> list[KeypairRecord]:
        with self._session() as db:
            rows = db.scalars(select(_Keypair).order_by(_Keypair.created_at)).all()
            return [_record(row, KeypairRecord) for row in rows]

    def active_access_keys(self, access_keys: set[str]) -> set[str]:
        """Which of `access_keys` still name an active keypair (one query, for revocation)."""
        if not access_keys:
            return set()
        with self._session() as db:
            rows = db.scalars(
                select(_Keypair.access_key).where(
                    _Keypair.access_key.in_(access_keys), _Keypair.is_active.is_(True)
                )
            ).all()
            return set(rows)

    def cached_active(self, access_key: str) -> bool | None:
        """Whether the keypair is still active, from the memo without blocking (None: the
        memo cannot tell; ask `active_access_keys` on a thread)."""
        keypair = self.cached_keypair(access_key)
        return None if keypair is None else keypair.is_active

    def remove_keypair(self, access_key: str) -> bool:
        with self._session(bump=True) as db:
            result = db.execute(delete(_Keypair).where(_Keypair.access_key == access_key))
            return bool(getattr(result, "rowcount", 0))

    # ------------------------------------------------------------------ sessions

    def add_session(self, record: SessionRecord) -> None:
        with self._session(bump=True) as db:
            db.add(_Session(**record.__dict__))

    def update_session(self, session_id: str, **fields: Any) -> None:
        with self._session(bump=True) as db:
            db.execute(update(_Session).where(_Session.id == session_id).values(**fields))

    def get_session(self, session_id: str) -> SessionRecord | None:
        found = self.memo.get("session", session_id)
        if found is not None:
            return found  # type: ignore[no-any-return]
        epoch = self.memo.epoch()
        with self.engine.connect() as connection:
            row = connection.execute(_SESSION_BY_ID, {"id": session_id}).first()
        if row is None:
            return None
        record = _record(row, SessionRecord)
        self.memo.put("session", session_id, record, epoch)
        return record  # type: ignore[no-any-return]

    def cached_session(self, session_id: str) -> SessionRecord | None:
        """The session if memoised and still current, checked without blocking (None: ask
        `get_session` on a thread)."""
        return self.memo.get_inline("session", session_id)  # type: ignore[no-any-return]

    def list_sessions(
        self, access_key: str | None = None, statuses: Sequence[str] | None = None
    ) -> list[SessionRecord]:
        query = select(_Session).order_by(_Session.created_at)
        if access_key is not None:
            query = query.where(_Session.access_key == access_key)
        if statuses is not None:
            query = query.where(_Session.status.in_(statuses))
        with self._session() as db:
            return [_record(row, SessionRecord) for row in db.scalars(query).all()]

    # ------------------------------------------------------------------ storage folders

    def add_vfolder(self, record: VFolderRecord) -> None:
        with self._session() as db:
            db.add(_VFolder(**record.__dict__))

    def list_vfolders(self, access_key: str) -> list[VFolderRecord]:
        query = select(_VFolder).where(_VFolder.access_key == access_key)
        with self._session() as db:
            rows = db.scalars(query.order_by(_VFolder.created_at)).all()
            return [_record(row, VFolderRecord) for row in rows]

    def rename_vfolder(self, folder_id: str, name: str) -> None:
        with self._session() as db:
            db.execute(update(_VFolder).where(_VFolder.id == folder_id).values(name=name))

    def remove_vfolder(self, folder_id: str) -> None:
        with self._session() as db:
            db.execute(delete(_VFolder).where(_VFolder.id == folder_id))
            db.execute(delete(_VFolderMount).where(_VFolderMount.folder_id == folder_id))

    def add_vfolder_mounts(self, session_id: str, folder_ids: list[str]) -> None:
        with self._session() as db:
            for folder_id in folder_ids:
                db.add(_VFolderMount(session_id=session_id, folder_id=folder_id))

    def vfolder_holders(self, folder_id: str, statuses: Sequence[str]) -> list[str]:
        """Ids of the sessions in one of `statuses` that mount the folder."""
        query = (
            select(_Session.id)
            .join(_VFolderMount, _VFolderMount.session_id == _Session.id)
            .where(_VFolderMount.folder_id == folder_id, _Session.status.in_(statuses))
        )
        with self._session() as db:
            return list(db.scalars(query).all())

    # ------------------------------------------------------------------ events

    def add_event(self, session_id: str, kind: str, reason: str = "", message: str = "") -> None:
        with self._session() as db:
            db.add(
                _Event(
                    session_id=session_id, at=time.time(), kind=kind, reason=reason, message=message
                )
            )

    def list_events(self, session_id: str) -> list[EventRecord]:
        query = select(_Event).where(_Event.session_id == session_id).order_by(_Event.id)
        with self._session() as db:
            return [_record(row, EventRecord) for row in db.scalars(query).all()]


_GEN: Table = _Generation.__table__  # type: ignore[assignment]
_BUMP = update(_GEN).where(_GEN.c.id == _GENERATION_ROW).values(value=_GEN.c.value + 1)
_READ_GENERATION = select(_GEN.c.value).where(_GEN.c.id == _GENERATION_ROW)
_KEYPAIR_BY_KEY = select(_Keypair.__table__).where(
    _Keypair.__table__.c.access_key == bindparam("key")
)
_SESSION_BY_ID = select(_Session.__table__).where(_Session.__table__.c.id == bindparam("id"))


def _add_missing_columns(engine: Engine) -> None:
    """Bring a database made by an older cogbox up to date: columns added since are all
    nullable, so adding them in place keeps every row."""
    existing = inspect(engine)
    with engine.begin() as connection:
        for table in _Base.metadata.sorted_tables:
            have = {column["name"] for column in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(
                        text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
