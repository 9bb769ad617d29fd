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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cogbox.config import recipes_dir
from cogbox.errors import CogboxError
from cogbox.images.builder import build_image
from cogbox.images.recipe import LoadedRecipe, load_recipe
from cogbox.images.store import Image, ImageNotFound, ImageStore
from cogbox.jail.oci import Bind
from cogbox.jail.policy import Policy, policy_or_default
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import (
    Display,
    Error,
    Event,
    Finished,
    InputRequest,
    KernelDied,
    OutputTruncated,
    Result,
    Stderr,
    Stdout,
)
from cogbox.kernel.files import FileEntry, NewFile, OpenFile, list_dir, open_file
from cogbox.kernel.pool import KernelPool
from cogbox.kernel.session import Session, start_session
from cogbox.kernel.start_gate import StartGate
from cogbox.service.create_options import session_policy

_MAX_THREADS = 128
_DONE = object()
_REPORT_WAIT_S = 30.0
# The most of one run's events (characters, plus a fixed cost per event) waiting between
# the kernel's thread and the event loop; past it events are dropped and counted. The
# session's output cap (512 KiB) usually ends a flood first, but it lets errors through,
# and a kernel can forge any number of them.
RUN_QUEUE_SIZE = 2 << 20
_EVENT_COST = 256

BuildProgress = Callable[[str], Awaitable[None]]
"""Told each step of an image build as it starts ("install Python packages")."""


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel needs to start: the session it serves, its image and /home/work."""

    session_id: str
    image: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None  # its jail's memory limit; default: the image policy's
    binds: list[Bind] = field(default_factory=list)  # its storage folders (service.vfolders)
    cpus: float | None = None  # its jail's cpu quota in cores; default: the image policy's
    output_limit: int | None = None  # characters of one run sent to a client; default: kernel's
    output_tap: Callable[[Event], None] | None = None  # hears all output (the session's log)


@dataclass(frozen=True)
class KernelState:
    """Whether a kernel runs; once it ended, why (`reason` is the jail's ExitReason)."""

    alive: bool
    reason: str = ""
    message: str = ""
    limit_hit: bool = False


@dataclass(frozen=True)
class PoolState:
    """A warm pool: started kernels of `image` kept ready (`size`), `ready` of them now."""

    image: str
    size: int
    ready: int


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

    async def memory_limit(self, image: str) -> int:
        """The memory limit of `image`'s own jail policy (its recipe's, if not built yet).
        Raises ImageNotFound when there is neither an image nor a recipe of that name."""
        ...

    async def image_policy(self, image: str) -> Policy:
        """`image`'s own jail policy (its recipe's, if not built yet); ImageNotFound as above."""
        ...

    async def open(self) -> None:
        """Get ready to start kernels (e.g. fill warm pools)."""
        ...

    def pools(self) -> list[PoolState]: ...

    async def start(self, spec: KernelSpec) -> Path:
        """Start the session's kernel; returns the host folder that holds its /home/work:
        `spec.workdir`, or the folder of a pre-started (pooled) kernel."""
        ...

    def execute(
        self, session_id: str, code: str | BatchCommand, timeout: float | None
    ) -> AsyncIterator[Event]: ...

    async def send_input(self, session_id: str, text: str) -> None: ...

    async def interrupt(self, session_id: str) -> None: ...

    async def restart(self, session_id: str) -> None: ...

    async def stop(self, session_id: str) -> None: ...

    def state(self, session_id: str) -> KernelState: ...

    async def create_file(self, session_id: str, path: str) -> NewFile:
        """A new file of /home/work to write in chunks (an upload), in place once committed."""
        ...

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        """A regular file of /home/work opened to read in chunks (a download)."""
        ...

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]: ...

    def connection_info(self, session_id: str) -> dict[str, Any]:
        """Jupyter connection info (transport, sockets, key) to reach the session's kernel
        from this host; it stays valid across restarts of the kernel."""
        ...

    async def close(self) -> None: ...


class LocalAgent:
    """Kernels in jails on this host, one `cogbox.kernel.session.Session` each.

    `pools` asks for warm pools: image name -> how many started kernels to keep ready (see
    cogbox.kernel.pool). A session is handed a pooled kernel when one is ready and it wants
    nothing a pooled kernel lacks (its own environment, another memory limit); otherwise its
    kernel starts cold. Pooled kernels' /home/work folders live in `workdirs`.
    """

    def __init__(
        self,
        store: ImageStore | None = None,
        recipes: Path | None = None,
        *,
        pools: Mapping[str, int] | None = None,
        workdirs: Path | None = None,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._threads = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="cogbox-agent")
        self._cold_starts = StartGate()  # 3 per core, in arrival order (kernel/start_gate.py)
        self._store = store or ImageStore()
        self._recipes = recipes
        self._builds: dict[str, _Build] = {}
        self._pool_sizes = {image: size for image, size in (pools or {}).items() if size > 0}
        self._workdirs = workdirs
        self._pools: dict[str, KernelPool] = {}
        self._pools_lock = threading.Lock()  # starts run in several of the agent's threads
        self._policies: dict[tuple[str, str], Policy] = {}  # (image, digest) -> its policy

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

    def _recipe(self, image: str) -> LoadedRecipe:
        """The recipe of `image` (ImageNotFound, naming the known ones, if there is none)."""
        recipes = self._recipes or recipes_dir()
        folder = recipes / image
        if "/" in image or image.startswith(".") or not (folder / "recipe.yml").is_file():
            known = sorted(p.parent.name for p in recipes.glob("*/recipe.yml"))
            raise ImageNotFound(
                f"no image or recipe named {image!r}; known recipes: "
                + (", ".join(known) or "none")
            )
        loaded = load_recipe(folder)
        if loaded.name != image:
            raise ImageNotFound(
                f"the recipe of image {image!r} is named {loaded.name!r}: "
                "make its name match its folder"
            )
        return loaded

    async def _build(self, image: str, build: "_Build") -> None:
        loaded = await self._call(self._recipe, image)
        assert isinstance(loaded, LoadedRecipe)
        loop = asyncio.get_running_loop()

        def report(step: str) -> None:  # in the build's thread
            future = asyncio.run_coroutine_threadsafe(build.announce(step), loop)
            # Waiting keeps the steps in order; a stuck listener cannot stall the build.
            with contextlib.suppress(Exception):
                future.result(_REPORT_WAIT_S)

        await self._call(build_image, loaded, self._store, report)

    async def memory_limit(self, image: str) -> int:
        policy = await self.image_policy(image)
        return policy.limits.memory_bytes

    async def image_policy(self, image: str) -> Policy:
        policy = await self._call(self._image_policy, image)
        assert isinstance(policy, Policy)
        return policy

    def _image_policy(self, image: str) -> Policy:
        found = self._store.find(image)
        if found is not None:
            return self._policy(found)
        return policy_or_default(self._recipe(image).policy_path)

    def _policy(self, image: Image) -> Policy:
        """The image's own jail policy, read once per image version (a version never
        changes: a rebuild is a new digest)."""
        key = (image.name, image.digest)
        if key not in self._policies:
            self._policies[key] = policy_or_default(image.policy_path)
        return self._policies[key]

    async def open(self) -> None:
        for image in self._pool_sizes:
            await self._call(self._pool, image)

    def _pool(self, image: str) -> KernelPool | None:
        """The warm pool of `image` if one is wanted and the image is built, made (or
        remade, after the image was rebuilt) on first use."""
        size = self._pool_sizes.get(image)
        if not size:
            return None
        with self._pools_lock:
            return self._current_pool(image, size)

    def _current_pool(self, image: str, size: int) -> KernelPool | None:
        current = self._store.find(image)
        pool = self._pools.get(image)
        if pool is not None and (current is None or pool.image.digest != current.digest):
            pool.close()  # kernels of an image that is gone or was rebuilt
            del self._pools[image]
            pool = None
        if pool is None and current is not None:
            try:
                pool = KernelPool(current, size, store=self._store, workdirs=self._workdirs)
            except CogboxError as exc:  # e.g. a broken policy: sessions start cold and say why
                logging.getLogger(__name__).warning("no warm pool for %s: %s", image, exc)
                return None
            self._pools[image] = pool
        return pool

    def pools(self) -> list[PoolState]:
        return [
            # A pool grown under demand reports what it aims for now (cogbox.kernel.pool).
            PoolState(image, pool.size, pool.ready_count)
            if (pool := self._pools.get(image))
            else PoolState(image, size, 0)
            for image, size in sorted(self._pool_sizes.items())
        ]

    def _acquire(self, spec: KernelSpec) -> Session | None:
        pool = self._pool(spec.image)
        if pool is None or spec.env or spec.binds or spec.cpus is not None:
            return None
        if spec.memory_bytes not in (None, pool.policy.limits.memory_bytes):
            return None
        return pool.try_acquire()

    def _start_session(self, spec: KernelSpec) -> Session:
        session = self._acquire(spec) or self._cold_starts.run(lambda: self._start_cold(spec))
        if spec.output_limit is not None:
            session.output_limit = spec.output_limit
        session.output_tap = spec.output_tap
        return session

    def _start_cold(self, spec: KernelSpec) -> Session:
        spec.workdir.mkdir(parents=True, exist_ok=True, mode=0o755)
        image = self._store.get(spec.image)
        policy = session_policy(self._policy(image), spec.env, spec.memory_bytes, spec.cpus)
        return start_session(image, policy, spec.workdir, env=spec.env, binds=spec.binds)

    async def start(self, spec: KernelSpec) -> Path:
        session = await self._call(self._start_session, spec)
        assert isinstance(session, Session)
        self._sessions[spec.session_id] = session
        return session.workdir

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
        waiting = _QueuedEvents(RUN_QUEUE_SIZE)

        def pump(events: Iterator[Event]) -> None:
            try:
                for event in events:
                    if isinstance(event, Finished | KernelDied) and waiting.dropped:
                        notice = waiting.notice()
                        waiting.admit(notice)
                        loop.call_soon_threadsafe(queue.put_nowait, notice)
                    if waiting.admit(event):
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
                waiting.release(item)
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
        if ended is None and session.restart_failure is not None:
            return KernelState(False, "restart_failed", session.restart_failure)
        if ended is None:
            return KernelState(True)
        return KernelState(False, str(ended.reason), ended.message, ended.limit_hit)

    async def create_file(self, session_id: str, path: str) -> NewFile:
        created = await self._call(self._session(session_id).create_file, path)
        assert isinstance(created, NewFile)
        return created

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        opened = await self._call(self._session(session_id).open_file, path)
        assert isinstance(opened, OpenFile)
        return opened

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]:
        entries = await self._call(self._session(session_id).list_files, path)
        assert isinstance(entries, list)
        return entries

    def connection_info(self, session_id: str) -> dict[str, Any]:
        return self._session(session_id).connection_info()

    async def close(self) -> None:
        """Stop every kernel (their work dirs are kept) and the agent's threads."""
        await asyncio.gather(
            *(self.stop(session_id) for session_id in list(self._sessions)),
            *(self._call(pool.close) for pool in self._pools.values()),
            return_exceptions=True,
        )
        self._pools.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)


class _QueuedEvents:
    """A run's events waiting for the event loop, bounded in size: past the bound events are
    dropped and counted, except those the run's progress needs (input requests, notices,
    terminal events)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def admit(self, event: Event) -> bool:
        size = _queued_size(event)
        with self._lock:
            if self.size + size > self.limit and not isinstance(event, _NEVER_DROPPED):
                self.dropped += 1
                return False
            self.size += size
            return True

    def release(self, item: object) -> None:
        size = _queued_size(item)
        with self._lock:
            self.size -= size

    def notice(self) -> OutputTruncated:
        return OutputTruncated(
            self.limit,
            f"output truncated: {self.dropped:,} events of this run were dropped because "
            f"more than {self.limit:,} characters of them waited for a slow client",
        )


_NEVER_DROPPED = (Finished, KernelDied, InputRequest, OutputTruncated)


def _queued_size(item: object) -> int:
    if isinstance(item, Stdout | Stderr):
        return _EVENT_COST + len(item.text)
    if isinstance(item, Display | Result):
        return _EVENT_COST + sum(len(value) for value in item.data.values())
    if isinstance(item, Error):
        return _EVENT_COST + len(item.ename) + len(item.evalue) + sum(map(len, item.traceback))
    return _EVENT_COST


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


def open_stored_file(workdir: Path, path: str) -> OpenFile:
    """A file of an ended session's saved work dir (same path rules as a live session)."""
    return open_file(workdir, path)


def list_stored_files(workdir: Path, path: str) -> list[FileEntry]:
    return list_dir(workdir, path)
