"""`LocalAgent`: the `Agent` protocol (service/agent.py) for this host's jails.

It starts and stops jailed kernels (`cogbox.kernel.session`), keeps warm pools, owns each
run (agent/runs.py) and writes the sessions' full logs. Blocking kernel calls and image
builds run in the agent's own threads, never on the event loop. `cogbox agent` serves one
(agent/server.py); `cogbox serve --agent embedded` holds one in the manager's process.
"""

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from cogbox.agent.event_queue import QueuedEvents
from cogbox.agent.image_build import ImageBuild
from cogbox.agent.runs import Run, Runs
from cogbox.config import recipes_dir
from cogbox.errors import CogboxError
from cogbox.images.builder import build_image
from cogbox.images.recipe import LoadedRecipe, load_recipe
from cogbox.images.ref import find_ref, parse_ref, ref_of
from cogbox.images.store import Image, ImageNotFound, ImageStore
from cogbox.jail.oci import Bind
from cogbox.jail.policy import Policy, policy_or_default
from cogbox.jail.reaper import reap_stale_jails
from cogbox.kernel import session_state
from cogbox.kernel.connection import reap_stale_runtimes
from cogbox.kernel.errors import KernelError, KernelGone
from cogbox.kernel.events import (
    Event,
    Finished,
    KernelDied,
)
from cogbox.kernel.files import FileEntry, NewFile, OpenFile, list_dir, open_file
from cogbox.kernel.pool import POOL_PREFIX, KernelPool
from cogbox.kernel.provisioner import attach_provisioner
from cogbox.kernel.relay import KernelChannels
from cogbox.kernel.run_request import RunRequest, batch_request
from cogbox.kernel.session import Session, start_session
from cogbox.kernel.start_gate import StartGate
from cogbox.service.agent import (
    BatchCommand,
    BuildProgress,
    FolderBind,
    Inventory,
    KernelSpec,
    KernelState,
    PoolState,
    WorkdirGone,
)
from cogbox.service.create_options import session_policy
from cogbox.service.logs import LogWriter

log = logging.getLogger(__name__)

_MAX_THREADS = 128
_FOLDER_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")  # a folder's uuid
_BEGIN_WAIT_S = 2.0  # how long an interrupt waits for a run sent just before it to begin
_HANDED = "session"  # in a pool's work dir folder (beside home/): the session it went to
_DONE = object()
_REPORT_WAIT_S = 30.0
RELAY_NUDGE_S = 5.0  # how long a new relay waits for the kernel's iopub to reach it
# The most of one run's events (characters, plus a fixed cost per event) waiting between
# the kernel's thread and the event loop; past it events are dropped and counted. The
# session's output cap (512 KiB) usually ends a flood first, but it lets errors through,
# and a kernel can forge any number of them.
RUN_QUEUE_SIZE = 2 << 20


class LocalAgent:
    """Kernels in jails on this host, one `cogbox.kernel.session.Session` each.

    `pools` asks for warm pools: image name -> how many started kernels to keep ready (see
    cogbox.kernel.pool). A session is handed a pooled kernel when one is ready and it wants
    nothing a pooled kernel lacks (its own environment, another memory limit); otherwise its
    kernel starts cold. Sessions' work dirs live in `workdirs` (`<name>/home`), pooled
    kernels' too; sessions' full logs in `logs_dir` (written here, so output a run prints
    while no manager listens is logged all the same).
    """

    def __init__(
        self,
        store: ImageStore | None = None,
        recipes: Path | None = None,
        *,
        pools: Mapping[str, int] | None = None,
        workdirs: Path | None = None,
        logs_dir: Path | None = None,
        states_dir: Path | None = None,
        folders: Path | None = None,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._notes: dict[str, dict[str, Any]] = {}  # _note's, by session id
        self._folders = folders  # storage folders' mounts, <id>/mnt (service.vfolders)
        # Where each kernel persists what a restarted agent needs to re-attach (its own
        # folder, <session id>/) and this agent's note of it (<session id>.json).
        self._states_dir = states_dir
        self._gone: dict[str, KernelState] = {}  # kernels that died while no agent ran
        self._logs_dir = logs_dir
        self._logs: dict[str, LogWriter] = {}
        self.runs = Runs()
        self._run_locks: dict[str, asyncio.Lock] = {}  # a session's runs go one at a time
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="cogbox-agent")
        self._cold_starts = StartGate()  # 3 per core, in arrival order (kernel/start_gate.py)
        self._store = store or ImageStore()
        self._recipes = recipes
        self._builds: dict[str, ImageBuild] = {}
        self._pool_sizes = {image: size for image, size in (pools or {}).items() if size > 0}
        self._workdirs = workdirs
        self._pools: dict[str, KernelPool] = {}
        self._pools_lock = threading.Lock()  # starts run in several of the agent's threads
        self._policies: dict[tuple[str, str], Policy] = {}  # (image, digest) -> its policy
        self._zmq: zmq.Context[Any] | None = None  # Jupyter relays' and runs' sockets
        self._run_channels: dict[str, KernelChannels] = {}  # each session's, for its runs

    async def _call(self, function: object, *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, function, *args)  # type: ignore[arg-type]

    def _session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise KernelError(f"no kernel runs for session {session_id}")
        return session

    async def prepare_image(self, image: str, progress: BuildProgress) -> str:
        """Builds run one per image: a second caller joins the running build (hearing its
        latest step at once, then the rest) instead of starting its own."""
        found = await self._call(self._store.find, image)
        if found is None:
            build = self._builds.get(image)
            if build is None:
                build = ImageBuild()
                self._builds[image] = build
                build.task = asyncio.create_task(self._build(image, build))
                build.task.add_done_callback(lambda _: self._builds.pop(image, None))
            await build.join(progress)
            found = await self._call(self._store.get, image)
        assert isinstance(found, Image)
        return ref_of(found)

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

    async def _build(self, image: str, build: ImageBuild) -> None:
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
        """Clear what a previous agent on this node left (it was killed: its jails, their
        runtime folders, unused pool work dirs), then fill the warm pools."""
        await self._call(self._reap)
        for session_id, session in await self._call(self._attach_all):  # type: ignore[attr-defined]
            self._sessions[session_id] = session
            self._resume_pending(session_id, session)
        for image in self._pool_sizes:
            await self._call(self._pool, image)

    def _attach_all(self) -> list[tuple[str, Session]]:
        """Re-attach to the kernels a previous agent left running (Session.attach); pooled
        kernels it never handed out are stopped (their pools start afresh)."""
        if self._states_dir is None or not self._states_dir.is_dir():
            return []
        attached: list[tuple[str, Session]] = []
        for folder in sorted(p for p in self._states_dir.iterdir() if p.is_dir()):
            session_id = folder.name
            try:
                session = Session.attach(folder, store=self._store)
            except KernelError as exc:
                if isinstance(exc, KernelGone):
                    self._gone[session_id] = KernelState(
                        False, exc.reason, exc.message, exc.limit_hit
                    )
                else:
                    log.warning("could not re-attach session %s: %s", session_id, exc)
                    _stop_unready(folder)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if session_id.startswith(POOL_PREFIX):  # never handed out: not worth keeping
                self._discard_pooled(session)
                continue
            note = self._note(session_id)
            if "output_limit" in note:
                session.output_limit = int(note["output_limit"])
            if note.get("log_limit") and self._logs_dir is not None:
                self._logs[session_id] = LogWriter(
                    self._logs_dir, session_id, int(note["log_limit"])
                )
            attached.append((session_id, session))
        return attached

    def _discard_pooled(self, session: Session) -> None:
        # The reaper already removed its unused work dir; the jail's cleanup copies
        # /home/work back into it, so give it the folder, then remove it with the kernel.
        session.workdir.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            session.shutdown()
        except KernelError as exc:
            log.warning("could not stop an unused pooled kernel: %s", exc)
        shutil.rmtree(session.workdir.parent, ignore_errors=True)

    def _note(self, session_id: str) -> dict[str, Any]:
        """This agent's note of a persisted session: its limits, the log offset its run
        in flight started at (read from its file once, then kept here)."""
        if self._states_dir is None:
            return {}
        if session_id not in self._notes:
            try:
                value = json.loads((self._states_dir / f"{session_id}.json").read_text())
            except (OSError, ValueError):
                value = {}
            self._notes[session_id] = value if isinstance(value, dict) else {}
        return self._notes[session_id]

    def _write_note(self, session_id: str, **changes: Any) -> None:
        if self._states_dir is None or not self._persists(session_id):
            return
        note = self._notes[session_id] = {**self._note(session_id), **changes}
        path = self._states_dir / f"{session_id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(note))
        temporary.replace(path)

    def _persists(self, session_id: str) -> bool:
        return self._states_dir is not None and (self._states_dir / session_id).is_dir()

    def _resume_pending(self, session_id: str, session: Session) -> None:
        """Fill a run from `Session.resume_run()` for the run the previous agent left in
        flight: the whole run again from its start, so its part of the log is rewritten
        from where that run began (nothing twice, nothing lost)."""
        run_id = session.pending_run
        if not run_id:
            return
        writer = self._logs.get(session_id)
        offset = session.pending_note.get("log_offset")
        if writer is not None and isinstance(offset, int):
            writer.truncate(offset)
        run = Run(session_id, run_id)
        self.runs.add(run)
        lock = self._run_locks.setdefault(session_id, asyncio.Lock())

        def events() -> AsyncGenerator[Event, None]:
            return self._from_thread(session.resume_run(), writer)

        task = asyncio.create_task(self._drive(session, run, events, lock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reap(self) -> None:
        if self._workdirs is not None:  # pool folders a killed agent never handed out
            for folder in self._workdirs.glob("pool-*"):
                if not (folder / _HANDED).exists():
                    shutil.rmtree(folder, ignore_errors=True)
        try:
            reaped = reap_stale_jails()
        except (OSError, CogboxError):
            log.exception("could not reap the jails of a previous run")
        else:
            if reaped:
                log.info("removed %d jails a previous run left: %s", len(reaped), reaped)
        with contextlib.suppress(OSError):  # runtime folders (keys, logs) of its kernels
            if runtimes := reap_stale_runtimes():
                log.info("removed %d kernel runtime folders a previous run left", len(runtimes))

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
                pool = KernelPool(
                    current,
                    size,
                    store=self._store,
                    workdirs=self._workdirs,
                    states_dir=self._states_dir,
                )
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

    def _acquire(self, spec: KernelSpec, *, missed: bool = False) -> Session | None:
        """A pooled kernel for `spec` if one is ready (`missed`: asked again, after a miss)."""
        ref = parse_ref(spec.image)
        pool = self._pool(ref.name)
        if pool is None or spec.env or spec.folders or spec.cpus is not None:
            return None
        if ref.digest not in (None, pool.image.digest):
            return None  # a pool of another version (rebuilt): the start says why
        if spec.runtime != "runc":
            return None
        if spec.memory_bytes not in (None, pool.policy.limits.memory_bytes):
            return None
        session = pool.take_ready() if missed else pool.try_acquire()
        if session is not None:  # its pool folder is a session's now: kept past a restart
            (session.workdir.parent / _HANDED).write_text(spec.session_id)
            if session.state_dir is not None and self._states_dir is not None:
                session.move_state(self._states_dir / spec.session_id)
        return session

    def _start_session(self, spec: KernelSpec) -> Session:
        session = self._acquire(spec)
        if session is None:
            # By its turn the pool (grown by the miss) may have one ready: take it rather
            # than start one more kernel on cores the pool's start already used.
            session = self._cold_starts.run(
                lambda: self._acquire(spec, missed=True) or self._start_cold(spec)
            )
        if spec.output_limit is not None:
            session.output_limit = spec.output_limit
        if spec.log_limit is not None and self._logs_dir is not None:
            writer = LogWriter(self._logs_dir, spec.session_id, spec.log_limit)
            self._logs[spec.session_id] = writer
            session.output_tap = writer.write_event
        self._write_note(
            spec.session_id, log_limit=spec.log_limit, output_limit=session.output_limit
        )
        return session

    def _workdir(self, name: str) -> Path:
        """The host folder of work dir `name` (a session id or a pool's name, never a path)."""
        if self._workdirs is None:
            raise KernelError("this agent keeps no work dirs")
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise KernelError(f"invalid work dir name {name!r}")
        return self._workdirs / name / "home"

    def _binds(self, folders: list[FolderBind]) -> list[Bind]:
        """The jail's binds of storage folders named by id, each proven to be a mounted
        filesystem in this agent's folders root before it is bound."""
        binds = []
        for folder in folders:
            if self._folders is None:
                raise KernelError("this agent keeps no storage folders")
            if not _FOLDER_ID.fullmatch(folder.folder):
                raise KernelError(f"invalid storage folder id {folder.folder!r}")
            root = self._folders / folder.folder / "mnt"
            if not os.path.ismount(root) or root.is_symlink():
                raise KernelError(f"storage folder {folder.folder} is not mounted on this node")
            binds.append(
                Bind(
                    root,
                    folder.destination,
                    readonly=folder.readonly,
                    give_to_jail=folder.give_to_jail,
                )
            )
        return binds

    def _start_cold(self, spec: KernelSpec) -> Session:
        workdir = self._workdir(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o755)
        image = find_ref(self._store, spec.image)
        policy = session_policy(self._policy(image), spec.env, spec.memory_bytes, spec.cpus)
        state_dir = None
        if self._states_dir is not None:  # a kernel a restarted agent re-attaches
            self._states_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            state_dir = self._states_dir / spec.session_id
        return start_session(
            image,
            policy,
            workdir,
            env=spec.env,
            binds=self._binds(spec.folders),
            runtime=spec.runtime,
            state_dir=state_dir,
        )

    async def start(self, spec: KernelSpec) -> str:
        session = await self._call(self._start_session, spec)
        assert isinstance(session, Session)
        self._sessions[spec.session_id] = session
        return session.workdir.parent.name

    async def inventory(self) -> Inventory:
        held = [*self._sessions, *self._gone]
        return Inventory({session_id: self.state(session_id) for session_id in held})

    async def execute(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """The run's events as they happen; closing the iterator early interrupts the code."""
        run = self.start_run(session_id, code, timeout, run_id)
        finished = False
        try:
            async for _, event in run.follow():
                yield event
                finished = isinstance(event, Finished | KernelDied)
        finally:
            if not finished:
                self.abandon(run)
            elif run_id is None:  # nobody will ask for it again
                run.acked = run.count

    async def resume(self, session_id: str, run_id: str) -> AsyncIterator[Event]:
        run = self.run(session_id, run_id)
        async for _, event in run.follow(run.acked):
            yield event

    async def ack(self, session_id: str, run_id: str, delivered: int) -> None:
        run = self.runs.get(session_id, run_id)
        if run is not None:
            run.acked = min(run.count, run.acked + delivered)

    def run(self, session_id: str, run_id: str) -> Run:
        run = self.runs.get(session_id, run_id)
        if run is None:
            raise KernelError(f"no run {run_id!r} is known in session {session_id}")
        return run

    def start_run(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> Run:
        """A new run of the session, owned by the agent: it goes on (into its buffer and the
        session's log) whether anyone follows it or not. Runs of a session go in order."""
        session = self._session(session_id)
        run_id = run_id or secrets.token_hex(8)
        if self.runs.get(session_id, run_id) is not None:
            raise KernelError(f"run {run_id!r} already exists in session {session_id}")
        run = Run(session_id, run_id)
        self.runs.add(run)
        lock = self._run_locks.setdefault(session_id, asyncio.Lock())

        named = run_id if self._persists(session_id) else None

        async def events() -> AsyncGenerator[Event, None]:
            writer = self._logs.get(session_id)
            # where this run's output starts in the log: a re-attaching agent rewrites the
            # run from there (kept with the run in flight: no write of its own per run)
            note = {"log_offset": writer.size} if writer is not None and named else None
            if isinstance(code, BatchCommand):  # an empty exec: KernelError to the follower
                request = replace(batch_request(code.build, code.exec, named), note=note)
            else:
                request = RunRequest(code, run_id=named, note=note)
            channels = self._run_channels.get(session_id)
            if channels is None:
                channels = KernelChannels(self._context(), session.connection_info())
                self._run_channels[session_id] = channels
            async with contextlib.aclosing(session.stream(channels, request, timeout)) as stream:
                async for event in stream:
                    yield event

        task = asyncio.create_task(self._drive(session, run, events, lock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    def abandon(self, run: Run) -> None:
        """Its follower gave up on the run: interrupt the code, stop at the next event."""
        if run.done:
            return
        run.abandoned = True
        session = self._sessions.get(run.session_id)
        if session is not None:
            session.interrupt()  # wakes a run that prints nothing, so the pump ends

    async def _drive(
        self,
        session: Session,
        run: Run,
        events: Callable[[], AsyncGenerator[Event, None]],
        lock: asyncio.Lock,
    ) -> None:
        try:
            async with lock:
                if run.abandoned:
                    run.finish(KernelError("the run was cancelled before it started"))
                    return
                run.set_begun()
                async with contextlib.aclosing(events()) as stream:
                    async for event in stream:
                        run.append(event)
                        if run.abandoned:
                            break
        except Exception as exc:  # reported to its follower
            run.finish(exc)
        except BaseException:
            run.finish(KernelError("the agent stopped the run"))
            raise
        else:
            run.finish()

    async def _from_thread(
        self, events: Iterator[Event], log_to: LogWriter | None
    ) -> AsyncGenerator[Event, None]:
        """A blocking session's events (a resumed run, read from its monitor's spool) moved
        from a thread onto the loop, bounded in between; `log_to` hears them too (the
        kernel session has no output tap of this agent)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        waiting = QueuedEvents(RUN_QUEUE_SIZE)
        stop = False

        def pump() -> None:
            try:
                for event in events:
                    if log_to is not None:
                        log_to.write_event(event)
                    if isinstance(event, Finished | KernelDied) and waiting.dropped:
                        notice = waiting.notice()
                        waiting.admit(notice)
                        loop.call_soon_threadsafe(queue.put_nowait, notice)
                    if waiting.admit(event):
                        loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop:
                        break
            except BaseException as exc:  # reported to the follower, not lost in the thread
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with contextlib.suppress(Exception):
                    events.close()  # type: ignore[attr-defined]
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._threads, pump)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                waiting.release(item)
                assert isinstance(item, Finished | KernelDied) or hasattr(item, "kind")
                yield item  # type: ignore[misc]
        finally:
            stop = True

    async def send_input(self, session_id: str, text: str) -> None:
        self._session(session_id).send_input(text)

    async def interrupt(self, session_id: str) -> None:
        """Interrupt the running code. A run sent just before (its frame on the same
        channel) is given a moment to reach its session first; from there the session
        holds the interrupt until the kernel begins the code (an idle kernel ignores
        SIGINT, so an interrupt that overtook its run would be lost)."""
        session = self._session(session_id)
        pending = [run for run in self.runs.of(session_id) if not run.done and not run.begun]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending[-1].wait_begun(), _BEGIN_WAIT_S)
        await self._call(session.interrupt)  # a signal through the runtime: not on the loop

    async def restart(self, session_id: str) -> None:
        await self._call(self._session(session_id).restart)

    async def stop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            for run in self.runs.of(session_id):
                self.abandon(run)
            await self._call(session.shutdown)
        self._gone.pop(session_id, None)
        self.runs.drop(session_id)
        self._run_locks.pop(session_id, None)
        self._notes.pop(session_id, None)
        channels = self._run_channels.pop(session_id, None)
        if channels is not None:
            await channels.close()
        if self._states_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self._states_dir / f"{session_id}.json").unlink()
        writer = self._logs.pop(session_id, None)
        if writer is not None:
            writer.close()

    def state(self, session_id: str) -> KernelState:
        session = self._sessions.get(session_id)
        if session is None:
            return self._gone.get(session_id) or KernelState(
                False, "stopped", "the kernel is not running"
            )
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

    async def open_stored_file(self, workdir: str, path: str) -> OpenFile:
        opened = await self._call(open_file, self._stored(workdir), path)
        assert isinstance(opened, OpenFile)
        return opened

    async def list_stored_files(self, workdir: str, path: str) -> list[FileEntry]:
        entries = await self._call(list_dir, self._stored(workdir), path)
        assert isinstance(entries, list)
        return entries

    def _stored(self, workdir: str) -> Path:
        folder = self._workdir(workdir)
        if not folder.is_dir():
            raise WorkdirGone(f"the files of work dir {workdir} are gone")
        return folder

    async def remove_workdir(self, workdir: str) -> None:
        folder = self._workdir(workdir).parent
        await self._call(shutil.rmtree, folder, True)

    def _context(self) -> zmq.Context[Any]:
        if self._zmq is None:
            self._zmq = zmq.Context()
        return self._zmq

    async def open_relay(self, session_id: str) -> KernelChannels:
        channels = KernelChannels(self._context(), self._session(session_id).connection_info())
        try:
            await channels.nudge(RELAY_NUDGE_S)
        except BaseException:
            await channels.close()
            raise
        return channels

    async def close(self) -> None:
        """Stop every kernel (their work dirs are kept) and the agent's threads."""
        await asyncio.gather(
            *(self.stop(session_id) for session_id in list(self._sessions)),
            *(self._call(pool.close) for pool in self._pools.values()),
            return_exceptions=True,
        )
        self._pools.clear()
        for writer in self._logs.values():
            writer.close()
        self._logs.clear()
        if self._zmq is not None:
            self._zmq.destroy(linger=0)
            self._zmq = None
        self._threads.shutdown(wait=False, cancel_futures=True)


def _stop_unready(state_dir: Path) -> None:
    """Stop the jail of a kernel a killed agent was still starting (launched, never ready,
    so never saved whole): nobody can attach to it, and its monitor would keep it forever."""
    info = session_state.launching(state_dir)
    if info is None:
        return
    try:
        provisioner = attach_provisioner(info)
    except KernelError:
        return  # its monitor is gone already
    with contextlib.suppress(KernelError):
        provisioner.cleanup()
        log.info("stopped the kernel a previous agent left starting (%s)", state_dir.name)
