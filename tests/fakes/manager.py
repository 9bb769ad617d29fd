"""A SessionManager on a real SQLite database with a FakeAgent at the seam (fast tier)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from cogbox.kernel.events import Event
from cogbox.service.config import ServiceConfig
from cogbox.service.db import Database, KeypairRecord, SessionRecord
from cogbox.service.keypairs import create_keypair
from cogbox.service.sessions import SessionManager
from tests.fakes.agent import FakeAgent

T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run an async test body on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        # Not wait_for: code under test that swallows a CancelledError would turn a hang
        # into a pass.
        task = asyncio.ensure_future(test())
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            raise AssertionError(f"the test did not finish within {timeout:g} s")
        return task.result()

    return asyncio.run(bounded())


def service_config(directory: Path, **changes: Any) -> ServiceConfig:
    return ServiceConfig(
        database_url=f"sqlite:///{directory / 'cogbox.db'}",
        sessions_dir=directory / "sessions",
        logs_dir=directory / "logs",
        vfolders_dir=directory / "vfolders",
        agent="embedded",
        **changes,
    )


@asynccontextmanager
async def open_manager(
    config: ServiceConfig, agent: FakeAgent, db: Database | None = None, *, settle: bool = True
) -> AsyncIterator[SessionManager]:
    """An opened manager; closed (the agent let go, the database kept) at the end.

    `settle`: before closing, let the job scheduler take a pending wake-up: closing while
    one is pending can hang (the xfail test_closing_the_manager_right_after_a_session_ended
    _does_not_hang in test_manager_fast.py shows why)."""
    manager = SessionManager(db or Database(config.database_url), agent, config)
    await manager.open()
    try:
        yield manager
    finally:
        if settle:
            for _ in range(100):
                if not manager.jobs._wake.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)
        await manager.close()


def keypair(manager: SessionManager, **limits: Any) -> KeypairRecord:
    return create_keypair(manager.db, **limits)


async def collect(
    manager: SessionManager, record: SessionRecord, code: str, **options: Any
) -> list[Event]:
    return [event async for event in manager.execute(record, code, **options)]


async def current(manager: SessionManager, record: SessionRecord) -> SessionRecord:
    found = await asyncio.to_thread(manager.db.get_session, record.id)
    assert found is not None
    return found


async def event_kinds(manager: SessionManager, record: SessionRecord) -> list[str]:
    return [event.kind for event in await manager.events(record)]
