"""The agent: starts and stops jailed kernels and runs code in them, for the manager.

`Agent` is the seam between the manager (auth, bookkeeping, APIs) and where kernels run.
`LocalAgent` runs them on this host through `cogbox.kernel.session`; a remote agent (another
node, reached over the network) can implement the same protocol later without the manager
changing. Blocking kernel calls and image builds run in the agent's own threads, never on
the event loop.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cogbox.config import recipes_dir
from cogbox.images.builder import build_image
from cogbox.images.recipe import LoadedRecipe, load_recipe
from cogbox.images.store import ImageNotFound, ImageStore
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event, Finished, KernelDied
from cogbox.kernel.files import FileEntry, list_dir, read_file
from cogbox.kernel.session import Session, start_session

_MAX_THREADS = 128
_DONE = object()
_REPORT_WAIT_S = 30.0

BuildProgress = Callable[[str], Awaitable[None]]
"""Told each step of an image build as it starts ("install Python packages")."""


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel needs to start: the session it serves, its image and /home/work."""

    session_id: str
    image: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelState:
    """Whether a kernel runs; once it ended, why (`reason` is the jail's ExitReason)."""

    alive: bool
    reason: str = ""
    message: str = ""
    limit_hit: bool = False


@dataclass(frozen=True)
class BatchCommand:
    """Backend.AI's batch mode: an optional build command, then the exec command."""

    build: str | None
    exec: str


class Agent(Protocol):
    """Where kernels run. Every method may raise KernelError with a message for the user."""

    async def prepare_image(self, image: str, progress: BuildProgress) -> None:
        """Make sure a ready `image` exists where kernels run, building it from its recipe
        if needed (`progress` hears each build step; not called when no build is needed).
        Raises ImageNotFound when there is neither an image nor a recipe of that name."""
        ...

    async def start(self, spec: KernelSpec) -> None: ...

    def execute(
        self, session_id: str, code: str | BatchCommand, timeout: float | None
    ) -> AsyncIterator[Event]: ...

    async def send_input(self, session_id: str, text: str) -> None: ...

    async def interrupt(self, session_id: str) -> None: ...

    async def restart(self, session_id: str) -> None: ...

    async def stop(self, session_id: str) -> None: ...

    def state(self, session_id: str) -> KernelState: ...

    async def upload(self, session_id: str, path: str, data: bytes) -> None: ...

    async def download(self, session_id: str, path: str) -> bytes: ...

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]: ...

    def connection_info(self, session_id: str) -> dict[str, Any]:
        """Jupyter connection info (transport, sockets, key) to reach the session's kernel
        from this host; it stays valid across restarts of the kernel."""
        ...

    async def close(self) -> None: ...


class LocalAgent:
    """Kernels in jails on this host, one `cogbox.kernel.session.Session` each."""

    def __init__(self, store: ImageStore | None = None, recipes: Path | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        self._threads = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="cogbox-agent")
        self._store = store or ImageStore()
        self._recipes = recipes
        self._builds: dict[str, _Build] = {}

    async def _call(self, function: object, *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, function, *args)  # type: ignore[arg-type]

    def _session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise KernelError(f"no kernel runs for session {session_id}")
        return session

    async def prepare_image(self, image: str, progress: BuildProgress) -> None:
        """Builds run one per image: a second caller joins the running build (hearing its
        latest step at once, then the rest) instead of starting its own."""
        if await self._call(self._store.find, image) is not None:
            return
        build = self._builds.get(image)
        if build is None:
            build = _Build()
            self._builds[image] = build
            build.task = asyncio.create_task(self._build(image, build))
            build.task.add_done_callback(lambda _: self._builds.pop(image, None))
        await build.join(progress)

    async def _build(self, image: str, build: "_Build") -> None:
        recipes = self._recipes or recipes_dir()
        folder = recipes / image
        if "/" in image or image.startswith(".") or not (folder / "recipe.yml").is_file():
            known = sorted(p.parent.name for p in recipes.glob("*/recipe.yml"))
            raise ImageNotFound(
                f"no image or recipe named {image!r}; known recipes in {recipes}: "
                + (", ".join(known) or "none")
            )
        loaded = await self._call(load_recipe, folder)
        assert isinstance(loaded, LoadedRecipe)
        if loaded.name != image:
            raise ImageNotFound(
                f"the recipe {folder / 'recipe.yml'} is named {loaded.name!r}, not {image!r}: "
                "make its name match its folder"
            )
        loop = asyncio.get_running_loop()

        def report(step: str) -> None:  # in the build's thread
            future = asyncio.run_coroutine_threadsafe(build.announce(step), loop)
            # Waiting keeps the steps in order; a stuck listener cannot stall the build.
            with contextlib.suppress(Exception):
                future.result(_REPORT_WAIT_S)

        await self._call(build_image, loaded, self._store, report)

    async def start(self, spec: KernelSpec) -> None:
        spec.workdir.mkdir(parents=True, exist_ok=True, mode=0o755)
        session = await self._call(
            lambda: start_session(spec.image, workdir=spec.workdir, env=spec.env)
        )
        assert isinstance(session, Session)
        self._sessions[spec.session_id] = session

    async def execute(
        self, session_id: str, code: str | BatchCommand, timeout: float | None
    ) -> AsyncIterator[Event]:
        """The run's events as they happen; closing the iterator early interrupts the code."""
        session = self._session(session_id)
        if isinstance(code, BatchCommand):
            events = session.execute_batch(code.build, code.exec, timeout=timeout)
        else:
            events = session.execute(code, timeout=timeout)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        abandoned = threading.Event()

        def pump(events: Iterator[Event]) -> None:
            try:
                for event in events:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if abandoned.is_set():
                        break
            except BaseException as exc:  # reported to the caller, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with contextlib.suppress(Exception):
                    events.close()  # type: ignore[attr-defined]
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._threads, pump, events)
        finished = False
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Finished | KernelDied) or hasattr(item, "kind")
                yield item  # type: ignore[misc]
                if isinstance(item, Finished | KernelDied):
                    finished = True
        finally:
            if not finished:
                abandoned.set()
                session.interrupt()  # wakes a run that prints nothing, so the pump ends

    async def send_input(self, session_id: str, text: str) -> None:
        self._session(session_id).send_input(text)

    async def interrupt(self, session_id: str) -> None:
        self._session(session_id).interrupt()

    async def restart(self, session_id: str) -> None:
        await self._call(self._session(session_id).restart)

    async def stop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            await self._call(session.shutdown)

    def state(self, session_id: str) -> KernelState:
        session = self._sessions.get(session_id)
        if session is None:
            return KernelState(False, "stopped", "the kernel is not running")
        ended = session.exit
        if ended is None:
            return KernelState(True)
        return KernelState(False, str(ended.reason), ended.message, ended.limit_hit)

    async def upload(self, session_id: str, path: str, data: bytes) -> None:
        await self._call(self._session(session_id).upload, path, data)

    async def download(self, session_id: str, path: str) -> bytes:
        data = await self._call(self._session(session_id).download, path)
        assert isinstance(data, bytes)
        return data

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]:
        entries = await self._call(self._session(session_id).list_files, path)
        assert isinstance(entries, list)
        return entries

    def connection_info(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        public = getattr(session, "connection_info", None)
        if callable(public):
            return dict(public())
        # The kernel's runtime directory (sockets and key) lives as long as the session;
        # read-only use until cogbox.kernel offers a public accessor.
        return dict(session._runtime.connection_info())

    async def close(self) -> None:
        """Stop every kernel (their work dirs are kept) and the agent's threads."""
        await asyncio.gather(
            *(self.stop(session_id) for session_id in list(self._sessions)),
            return_exceptions=True,
        )
        self._threads.shutdown(wait=False, cancel_futures=True)


class _Build:
    """One running image build and who listens to its steps."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.latest = ""
        self._listeners: list[BuildProgress] = []

    async def announce(self, step: str) -> None:
        self.latest = step
        for listener in list(self._listeners):
            try:
                await listener(step)
            except Exception:  # one listener failing must not fail the build or the others
                logging.getLogger(__name__).exception("a build progress listener failed")

    async def join(self, progress: BuildProgress) -> None:
        assert self.task is not None
        if self.latest:
            await progress(self.latest)
        self._listeners.append(progress)
        try:
            # Shielded: a caller that goes away (client disconnect) leaves the build running
            # for the others and for its next request.
            await asyncio.shield(self.task)
        finally:
            self._listeners.remove(progress)


def read_stored_file(workdir: Path, path: str) -> bytes:
    """A file of an ended session's saved work dir (same path rules as a live session)."""
    return read_file(workdir, path)


def list_stored_files(workdir: Path, path: str) -> list[FileEntry]:
    return list_dir(workdir, path)
