"""The manager's view of sessions: who owns them, their limits, state, events and files.

Every API surface goes through `SessionManager`; it enforces ownership (a keypair sees only
its own sessions: others' are "not found"), per-keypair limits, idle and lifetime limits, and
records each session's lifecycle in the database so a restart never forgets one.

A session's states are `SessionStatus` (cogbox.service.status: what each means). Every
session's output goes to its full log (cogbox.service.logs).
"""

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cogbox.agent.errors import ChannelError
from cogbox.errors import CogboxError
from cogbox.images.store import ImageNotFound
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event, Finished, KernelDied, OutputTruncated
from cogbox.kernel.files import FileEntry, OpenFile
from cogbox.kernel.relay import KernelRelay
from cogbox.service.agent import Agent, BatchCommand, KernelSpec, KernelState, WorkdirGone
from cogbox.service.bootstrap import run_bootstrap
from cogbox.service.config import ServiceConfig
from cogbox.service.create_options import check_env_against_policy
from cogbox.service.db import Database, EventRecord, KeypairRecord, SessionRecord
from cogbox.service.errors import (
    ServiceError,
    conflict,
    listed_problem,
    not_found,
    public_message,
    too_large,
)
from cogbox.service.jobs import JobQueue, dependencies_json
from cogbox.service.logs import remove_log
from cogbox.service.session_files import file_call, read_chunks
from cogbox.service.session_limits import check_limits
from cogbox.service.session_request import CreateRequest, check_name, check_request
from cogbox.service.status import ACTIVE, ENDED, SessionStatus
from cogbox.service.vfolders import FolderMount, VFolders

# Moved to their own modules; importers of these names from here keep working.
__all__ = ["CreateRequest", "SessionManager", "read_chunks"]
log = logging.getLogger(__name__)


@dataclass
class _Live:
    """What the manager keeps in memory about a session whose kernel it started."""

    id: str
    access_key: str
    created_at: float
    idle_timeout: float
    max_lifetime: float
    last_used: float
    memory_bytes: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0
    dead: bool = False
    restart_failed: bool = False  # no kernel at all until a restart succeeds


class SessionManager:
    """Sessions of all keypairs, backed by `db` and run by `agent`."""

    def __init__(self, db: Database, agent: Agent, config: ServiceConfig) -> None:
        self.db = db
        self.agent = agent
        self.config = config
        self.vfolders = VFolders(db, config)
        self._live: dict[str, _Live] = {}
        self._starting: dict[str, list[int]] = {}  # access key -> memory of sessions starting
        self._build_steps: dict[str, str] = {}  # session id -> latest step of its image build
        self._reaper: asyncio.Task[None] | None = None
        self.jobs = JobQueue(self)

    async def _db(self, function: object, *args: object, **kwargs: object) -> object:
        return await asyncio.to_thread(function, *args, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lifecycle of the service

    async def open(self) -> None:
        """Re-attach the sessions a previous run left active, start the reaper.

        The agent outlives the manager (a restart, a `kill -9`): a session whose kernel it
        still holds stays `running` with its variables, files and event history (or is
        reported `dead` with the jail's reason if the kernel died meanwhile); one the agent
        does not know is `lost` (its files are kept and downloadable). A job that had not
        started is cancelled; one whose command was running is followed to its end.
        """
        await self.agent.open()
        held = (await self.agent.inventory()).sessions
        stale = await asyncio.to_thread(self.db.list_sessions, None, ACTIVE)
        for record in stale:
            if record.status == SessionStatus.PENDING:
                await self.jobs.cancelled(
                    record.id, "service-restarted", "the service restarted before this job started"
                )
                continue
            state = held.pop(record.id, None)
            if state is not None:
                await self._reattach(record, state)
                if record.is_batch:
                    self.jobs.reattach(record, state)
                continue
            message = (
                "the service restarted while this session was active: its kernel and "
                "variables are gone; its files in /home/work are kept and downloadable"
            )
            await self._set_status(record.id, SessionStatus.LOST, "service-restarted", message)
        for orphan in held:  # kernels of sessions the database does not hold as active
            with contextlib.suppress(CogboxError):
                await self.agent.stop(orphan)
        self._reaper = asyncio.create_task(self._reap_forever())
        self.jobs.open()

    async def reattach(self) -> None:
        """The agent came back after its channel broke (it may have been restarted): keep
        the sessions it still holds, report those whose kernel died with its reason, and
        those it lost as `lost`."""
        held = (await self.agent.inventory()).sessions
        for session_id, live in list(self._live.items()):
            state = held.get(session_id)
            if state is None:
                self._live.pop(session_id, None)
                message = "the agent restarted and lost this session's kernel; files are kept"
                await self._set_status(session_id, SessionStatus.LOST, "agent-restarted", message)
            elif not state.alive:
                await self._mark_dead(session_id, live)

    async def _reattach(self, record: SessionRecord, state: KernelState) -> None:
        now = time.time()
        live = _Live(
            record.id,
            record.access_key,
            record.created_at,
            record.idle_timeout,
            record.max_lifetime,
            now,
            record.memory_bytes or 0,
        )
        self._live[record.id] = live
        if not state.alive:
            await self._mark_dead(record.id, live)
            return
        await self._event(record.id, "reattached", "service-restarted", "kernel kept")
        if record.status != SessionStatus.RUNNING:
            await self._set_status(record.id, SessionStatus.RUNNING, "reattached", "kernel ready")

    async def close(self) -> None:
        """Stop the reaper and every kernel. Sessions stay active in the database, so the
        next start reports them as lost rather than pretending they ended normally."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.jobs.close()
        self._live.clear()
        await self.agent.close()

    # ------------------------------------------------------------------ sessions

    async def create(
        self, keypair: KeypairRecord, request: CreateRequest
    ) -> tuple[SessionRecord, bool]:
        """Start a session (or, with `reuse_if_exists`, return the active one of that name).
        The bool says whether a new session was made."""
        name = request.name or f"cogbox-{secrets.token_hex(5)}"
        idle, lifetime = check_request(request, name, self.config)
        batch = request.session_type == "batch"
        access = keypair.access_key
        existing = [
            r
            for r in await asyncio.to_thread(self.db.list_sessions, access, ACTIVE)
            if r.name == name
        ]
        if existing:
            if request.reuse_if_exists and existing[0].image == request.image:
                return existing[0], False
            raise conflict(f"session name {name!r} is already used by an active session")
        try:
            policy = await self.agent.image_policy(request.image)
            check_env_against_policy(request.env, policy, request.image)
            memory = request.memory_bytes or policy.limits.memory_bytes
        except ImageNotFound as exc:
            raise listed_problem(exc) from exc
        mounts = await self.vfolders.mounts_for(keypair, request.mounts, request.mount_map)
        if batch:
            job = (name, idle, lifetime, memory, mounts)
            return await self._submit_job(keypair, request, *job), True
        release = self.reserve(keypair, memory)
        # An agent that queues (Slurm) answers after start_wait_s with the session pending.
        wait = getattr(self.agent, "start_wait_s", None)
        start = asyncio.ensure_future(
            self._start(keypair, request, name, idle, lifetime, memory, mounts)
        )
        start.add_done_callback(lambda task: (release(), task.cancelled() or task.exception()))
        if wait is not None and not (await asyncio.wait({start}, timeout=wait))[0]:
            queued = await asyncio.to_thread(self.db.list_sessions, access, ACTIVE)
            return next(r for r in queued if r.name == name), True
        return await start, True

    def reserve(self, keypair: KeypairRecord, memory: int) -> Callable[[], None]:
        """Hold room for a session that is about to start under `keypair`'s limits (429 if
        there is none); call the returned function once it runs or failed. Checked and held
        with no await in between, so concurrent creates cannot both pass a limit."""
        self._check_limits(keypair, memory)
        starting = self._starting.setdefault(keypair.access_key, [])
        starting.append(memory)
        return lambda: starting.remove(memory)

    async def _submit_job(
        self,
        keypair: KeypairRecord,
        request: CreateRequest,
        name: str,
        idle: float,
        lifetime: float,
        memory: int,
        mounts: list[FolderMount],
    ) -> SessionRecord:
        """Record a job `pending` and queue it; it starts when it may (cogbox.service.jobs)."""
        depends = await self.jobs.resolve_dependencies(keypair, request.dependencies)
        record = self._new_record(
            keypair, request, name, idle, lifetime, memory, SessionStatus.PENDING
        )
        record = replace(
            record,
            session_type="batch",
            startup_command=request.startup_command,
            dependencies=dependencies_json(depends),
            batch_timeout=request.batch_timeout,
        )
        await asyncio.to_thread(self.db.add_session, record)
        await self._event(record.id, "created", "", f"batch job of image {request.image}")
        job = self.jobs.job(record.id, name, keypair, request, memory, depends, mounts)
        await self.jobs.submit(job)
        result = await asyncio.to_thread(self.db.get_session, record.id)
        assert result is not None
        return result

    def _check_limits(self, keypair: KeypairRecord, memory: int) -> None:
        """Refuse (429) a session past `keypair`'s limits, counting its active sessions and
        those still starting."""
        access = keypair.access_key
        held = [live.memory_bytes for live in self._live.values() if live.access_key == access]
        check_limits(keypair, held + self._starting.get(access, []), memory)

    async def _start(
        self,
        keypair: KeypairRecord,
        request: CreateRequest,
        name: str,
        idle: float,
        lifetime: float,
        memory: int,
        mounts: list[FolderMount],
    ) -> SessionRecord:
        record = self._new_record(
            keypair, request, name, idle, lifetime, memory, SessionStatus.STARTING
        )
        await asyncio.to_thread(self.db.add_session, record)
        await self._event(record.id, "created", "", f"image {request.image}")
        return await self.launch(record.id, keypair, request, mounts)

    def _new_record(
        self,
        keypair: KeypairRecord,
        request: CreateRequest,
        name: str,
        idle: float,
        lifetime: float,
        memory: int,
        status: SessionStatus,
    ) -> SessionRecord:
        session_id = str(uuid.uuid4())
        now = time.time()
        return SessionRecord(
            id=session_id,
            name=name,
            access_key=keypair.access_key,
            image=request.image,
            status=status,
            status_info="",
            created_at=now,
            status_changed_at=now,
            terminated_at=None,
            idle_timeout=idle,
            max_lifetime=lifetime,
            workdir=str(self.config.sessions_dir / session_id / "home"),
            memory_bytes=memory,
        )

    async def launch(
        self,
        session_id: str,
        keypair: KeypairRecord,
        request: CreateRequest,
        mounts: list[FolderMount],
    ) -> SessionRecord:
        """Start the kernel of the recorded session `session_id` (its image built first if
        need be); its output goes to its log from the first run on."""
        record = await asyncio.to_thread(self.db.get_session, session_id)
        assert record is not None
        workdir = Path(record.workdir).parent.name  # the agent's name for it
        idle, lifetime = record.idle_timeout, record.max_lifetime
        memory = record.memory_bytes or 0
        now = time.time() if record.is_batch else record.created_at  # a job's life: from its start
        if record.status == SessionStatus.PENDING:
            await self._set_status(
                session_id, SessionStatus.STARTING, "scheduled", "the job starts"
            )
        try:
            image = await self._prepare_image(session_id, request.image)
            binds = await self.vfolders.binds(session_id, mounts)
            spec = KernelSpec(
                session_id,
                image,  # name@digest: the version prepared, or a refusal by name
                workdir,
                request.env,
                memory,
                binds,
                request.cpus,
                output_limit=request.output_limit or self.config.output_limit,
                log_limit=self.config.log_limit_bytes,
                runtime=request.runtime,
            )
            used = await self.agent.start(spec)
            pooled = used != workdir  # a pre-started kernel, with its own /home/work
            if pooled:
                folder = self.config.sessions_dir / used / "home"
                await asyncio.to_thread(self.db.update_session, session_id, workdir=str(folder))
            if request.bootstrap_script is not None:
                await run_bootstrap(self, session_id, request.bootstrap_script)
        except ServiceError:
            raise
        except ImageNotFound as exc:
            await self._set_status(session_id, SessionStatus.ERROR, "image-not-found", str(exc))
            raise listed_problem(exc) from exc
        except Exception as exc:
            ended = await asyncio.to_thread(self.db.get_session, session_id)
            if ended is not None and ended.status in ENDED:  # destroyed while it was queued
                raise conflict(f"session {session_id} ended before it started") from exc
            log.exception("session %s did not start", session_id)
            await self._set_status(session_id, SessionStatus.ERROR, "start-failed", str(exc))
            raise ServiceError(
                503, "kernel-start-failed", f"the session's kernel did not start: {exc}"
            ) from exc
        finally:
            # Kept until the kernel is up, long after the status left `building`: a reader
            # that saw `building` in the database always finds its step here.
            self._build_steps.pop(session_id, None)
        self._live[session_id] = _Live(
            session_id, keypair.access_key, now, idle, lifetime, time.time(), memory
        )
        source = " (pre-started, from the warm pool)" if pooled else ""
        await self._set_status(
            session_id, SessionStatus.RUNNING, "started", f"kernel of {request.image} ready{source}"
        )
        result = await asyncio.to_thread(self.db.get_session, session_id)
        assert result is not None
        return result

    async def _prepare_image(self, session_id: str, image: str) -> str:
        """Build the session's image first if it is not built yet: the session is `building`
        meanwhile and records each step. Raises ServiceError if the build fails or the
        session was destroyed while it waited."""
        building = False

        async def progress(step: str) -> None:
            nonlocal building
            self._build_steps[session_id] = step
            if not building:
                building = True
                await self._set_status(
                    session_id,
                    SessionStatus.BUILDING,
                    "image-build",
                    f"building image {image} first",
                )
            await self._event(session_id, "image_build", image, step)

        try:
            ref = await self.agent.prepare_image(image, progress)
        except ImageNotFound:
            raise
        except CogboxError as exc:
            log.warning("building image %s for session %s failed: %s", image, session_id, exc)
            await self._set_status(session_id, SessionStatus.ERROR, "image-build-failed", str(exc))
            raise ServiceError(
                503, "image-build-failed", f"building image {image!r} failed: {exc}"
            ) from exc
        if not building:
            return ref
        record = await asyncio.to_thread(self.db.get_session, session_id)
        if record is None or record.status not in ACTIVE:
            raise conflict(
                f"session {session_id} was destroyed while its image {image!r} was built "
                "(the image is kept)"
            )
        await self._set_status(
            session_id, SessionStatus.STARTING, "image-built", f"image {image} built"
        )
        return ref

    def build_step(self, record: SessionRecord) -> str:
        """The latest step of the image build a `building` session waits on, else ""."""
        return (
            self._build_steps.get(record.id, "") if record.status == SessionStatus.BUILDING else ""
        )

    async def find(self, keypair: KeypairRecord, ref: str) -> SessionRecord:
        """The keypair's session with id or name `ref` (an active one first); 404 otherwise,
        also when it belongs to another keypair."""
        record = None
        if len(ref) == 36:  # an id: from the memo when it can tell without a thread
            record = self.db.cached_session(ref) or await asyncio.to_thread(
                self.db.get_session, ref
            )
        if record is not None and record.access_key == keypair.access_key:
            return record
        named = [
            r
            for r in await asyncio.to_thread(self.db.list_sessions, keypair.access_key)
            if r.name == ref
        ]
        if named:
            active = [r for r in named if r.status in ACTIVE]
            return (active or named)[-1]
        raise not_found(f"no session {ref!r} for this keypair")

    async def list_sessions(
        self, keypair: KeypairRecord, statuses: Sequence[str] | None = None
    ) -> list[SessionRecord]:
        return await asyncio.to_thread(self.db.list_sessions, keypair.access_key, statuses)

    async def events(self, record: SessionRecord) -> list[EventRecord]:
        return await asyncio.to_thread(self.db.list_events, record.id)

    def is_busy(self, record: SessionRecord) -> bool:
        live = self._live.get(record.id)
        return live is not None and live.busy > 0

    def last_used(self, record: SessionRecord) -> float | None:
        live = self._live.get(record.id)
        return None if live is None else live.last_used

    def touch(self, record: SessionRecord) -> None:
        """Note that the session was used (outside `execute`): it is not idle."""
        live = self._live.get(record.id)
        if live is not None:
            live.last_used = time.time()

    def has_kernel(self, record: SessionRecord) -> bool:
        """Whether the manager runs a kernel for the session (possibly a dead one)."""
        return record.id in self._live

    def kernel_alive(self, record: SessionRecord) -> bool:
        live = self._live.get(record.id)
        return live is not None and not live.dead and self.agent.state(record.id).alive

    async def open_relay(self, record: SessionRecord) -> KernelRelay:
        """A Jupyter client's relay to the session's kernel, through its agent."""
        self._running(record)
        try:
            return await self.agent.open_relay(record.id)
        except ChannelError:
            raise  # 503 at the edge: the agent is away, the session is not at fault
        except KernelError as exc:
            raise conflict(str(exc)) from exc

    def _running(self, record: SessionRecord) -> _Live:
        live = self._live.get(record.id)
        if live is None:
            raise conflict(
                f"session {record.name!r} is {record.status}"
                + (f" ({record.status_info})" if record.status_info else "")
                + ": it runs no kernel; create a new session"
            )
        return live

    async def execute(
        self,
        record: SessionRecord,
        code: str | BatchCommand,
        timeout: float | None = None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Run code in the session; runs of one session wait for each other, in order."""
        live = self._running(record)
        if live.restart_failed:
            raise conflict(
                f"session {record.name!r} has no kernel: its last restart failed; restart it "
                "again or destroy it"
            )
        timeout = timeout or self.config.execution_timeout
        live.busy += 1
        try:
            async with live.lock:
                live.last_used = time.time()
                if record.id not in self._live:
                    raise conflict(f"session {record.name!r} ended while the run waited")
                runs = self.agent.execute(record.id, code, timeout, run_id)
                try:
                    async for event in runs:
                        await self._note(record, live, event)
                        yield event
                finally:
                    await runs.aclose()  # type: ignore[attr-defined]
                    live.last_used = time.time()
        except ChannelError:
            raise  # 503 at the edge: the agent is away, the session is not at fault
        except KernelError as exc:
            raise conflict(str(exc)) from exc
        finally:
            live.busy -= 1

    async def resume(self, record: SessionRecord, run_id: str) -> AsyncIterator[Event]:
        """The rest of run `run_id`, which a previous run of the service started (the agent
        kept it going): from the last event acknowledged (`ack`) on. 404 if it is unknown."""
        live = self._running(record)
        live.busy += 1
        try:
            async for event in self.agent.resume(record.id, run_id):
                live.last_used = time.time()
                await self._note(record, live, event)
                yield event
        except ChannelError:
            raise  # 503 at the edge: the agent is away, the run may be going on
        except KernelError as exc:
            raise ServiceError(
                404, "not-found", f"no run {run_id!r} is going in this session"
            ) from exc
        finally:
            live.busy -= 1

    async def ack(self, record: SessionRecord, run_id: str, delivered: int) -> None:
        """`delivered` more events of run `run_id` reached its client."""
        with contextlib.suppress(CogboxError):
            await self.agent.ack(record.id, run_id, delivered)

    async def _note(self, record: SessionRecord, live: _Live, event: Event) -> None:
        """Record the events of a run that matter later: limits hit, the kernel's death."""
        if isinstance(event, OutputTruncated):
            await self._event(record.id, "limit_hit", "output", event.message)
        elif isinstance(event, Finished) and event.status == "timeout":
            await self._event(record.id, "limit_hit", "exec_timeout", event.message)
        elif isinstance(event, KernelDied):
            await self._mark_dead(record.id, live)

    async def _mark_dead(self, session_id: str, live: _Live) -> None:
        if live.dead:
            return
        live.dead = True
        state = self.agent.state(session_id)
        kind = "limit_hit" if state.limit_hit else "died"
        await self._event(session_id, kind, state.reason, state.message)
        # lost: its host (a Slurm job, its node) is gone; nothing can restart it
        status = SessionStatus.LOST if state.lost else SessionStatus.DEAD
        await self._set_status(session_id, status, state.reason, state.message, event=None)

    async def send_input(self, record: SessionRecord, text: str) -> None:
        self._running(record)
        await self.agent.send_input(record.id, text)

    async def interrupt(self, record: SessionRecord) -> None:
        self._running(record)
        await self.agent.interrupt(record.id)
        await self._event(record.id, "interrupted", "user", "")

    async def restart(self, record: SessionRecord) -> None:
        """A fresh kernel (variables lost, files kept); also revives a dead session."""
        live = self._running(record)
        await self.agent.interrupt(record.id)
        async with live.lock:
            try:
                await self.agent.restart(record.id)
            except (CogboxError, OSError) as exc:
                # Clearly dead, never half-broken: runs are refused until a restart works.
                log.warning("restarting session %s failed: %s", record.id, exc)
                live.dead = live.restart_failed = True
                message = f"the kernel did not restart: {exc}"
                await self._set_status(record.id, SessionStatus.DEAD, "restart-failed", message)
                raise ServiceError(
                    409, "restart-failed", message + "; restart it again or destroy it"
                ) from exc
            live.dead = live.restart_failed = False
            live.last_used = time.time()
        await self._set_status(
            record.id, SessionStatus.RUNNING, "restarted", "fresh kernel; files kept"
        )

    async def destroy(
        self,
        record: SessionRecord,
        *,
        kind: str = "destroyed",
        reason: str = "user",
        message: str = "destroyed by its owner",
        keep_files: bool = False,
    ) -> None:
        """End the session's kernel. Its files are deleted unless `keep_files` (reaped
        sessions keep theirs so the owner can still download them); its log is kept.
        Destroying a session that already ended purges what is left: files and log.
        A job that has not started is cancelled."""
        if self.jobs.withdraw(record.id):
            await self.jobs.cancelled(record.id, reason, f"cancelled before it started: {message}")
            return
        live = self._live.pop(record.id, None)
        if live is not None:
            with contextlib.suppress(KernelError):
                await self.agent.interrupt(record.id)
            await self.agent.stop(record.id)
        if record.status in ACTIVE or live is not None:
            await self._set_status(record.id, SessionStatus.TERMINATED, reason, message, event=kind)
        elif not keep_files:
            await asyncio.to_thread(remove_log, self.config.logs_dir, record.id)
        if live is None and record.status in (SessionStatus.PENDING, SessionStatus.STARTING):
            await self.agent.stop(record.id)  # still queued (Slurm): its start sees it ended
        if not keep_files:
            await self.agent.remove_workdir(Path(record.workdir).parent.name)
        self.jobs.wake()  # a pending job may fit now

    # ------------------------------------------------------------------ files

    async def upload(
        self, record: SessionRecord, path: str, chunks: AsyncIterator[bytes], limit: int
    ) -> int:
        """Write `chunks` to `path` in /home/work, one chunk in memory at a time; the file
        appears only once whole. 413 past `limit` bytes; the quota of /home/work bounds it
        too. Returns the size written."""
        self._running(record)
        with file_call():
            new = await self.agent.create_file(record.id, path)
            try:
                async for chunk in chunks:
                    if new.size + len(chunk) > limit:
                        raise too_large(f"the file {path!r}", limit)
                    await asyncio.to_thread(new.write, chunk)
                await asyncio.to_thread(new.commit)
                return new.size
            finally:
                await asyncio.to_thread(new.close)

    async def open_file(self, record: SessionRecord, path: str) -> OpenFile:
        """A file of /home/work, opened to read in chunks (`read_chunks`): from the live
        kernel, or the saved work dir of an ended one. Close it when done."""
        with file_call():
            try:
                if record.id in self._live:
                    return await self.agent.open_file(record.id, path)
                return await self.agent.open_stored_file(Path(record.workdir).parent.name, path)
            except WorkdirGone as exc:
                raise self._files_gone(record) from exc

    async def list_files(self, record: SessionRecord, path: str) -> list[FileEntry]:
        with file_call():
            try:
                if record.id in self._live:
                    return await self.agent.list_files(record.id, path)
                return await self.agent.list_stored_files(Path(record.workdir).parent.name, path)
            except WorkdirGone as exc:
                raise self._files_gone(record) from exc

    def _files_gone(self, record: SessionRecord) -> ServiceError:
        return not_found(f"session {record.name!r} is {record.status}; its files are gone")

    async def rename(self, record: SessionRecord, name: str) -> None:
        """Give an active session a new name (unique among the keypair's active ones)."""
        if record.status not in ACTIVE:
            raise conflict(f"session {record.name!r} is {record.status}: only an active one")
        check_name(name)
        active = await asyncio.to_thread(self.db.list_sessions, record.access_key, ACTIVE)
        if any(r.name == name and r.id != record.id for r in active):
            raise conflict(f"session name {name!r} is already used by an active session")
        await asyncio.to_thread(self.db.update_session, record.id, name=name)
        await self._event(record.id, "renamed", "user", f"{record.name} -> {name}")

    async def record_event(self, session_id: str, kind: str, reason: str, message: str) -> None:
        await self._event(session_id, kind, reason, message)

    async def mark_error(self, session_id: str, reason: str, message: str) -> None:
        """A session that never became usable (e.g. its bootstrap script failed)."""
        await self._set_status(session_id, SessionStatus.ERROR, reason, message)

    # ------------------------------------------------------------------ internals

    async def _event(self, session_id: str, kind: str, reason: str, message: str) -> None:
        """Record a session event; its message goes through `public_message` (tenants read
        events: no host path may reach them)."""
        await asyncio.to_thread(
            self.db.add_event, session_id, kind, reason, public_message(message)
        )

    async def set_status(
        self, session_id: str, status: SessionStatus, reason: str, message: str
    ) -> None:
        """Record a new status (and an event of that kind saying `message`)."""
        await self._set_status(session_id, status, reason, message)

    async def _set_status(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str,
        message: str,
        *,
        event: str | None = "",
    ) -> None:
        now = time.time()
        fields: dict[str, object] = {
            "status": status,
            "status_info": reason,
            "status_changed_at": now,
        }
        if status in ENDED:
            fields["terminated_at"] = now
        await asyncio.to_thread(self.db.update_session, session_id, **fields)
        kind = status if event == "" else event
        if kind is not None:
            await self._event(session_id, kind, reason, message)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reaper_interval)
            try:
                await self.reap()
            except Exception:
                log.exception("the session reaper failed; retrying")

    async def reap(self) -> None:
        """End sessions past their lifetime or idle too long; notice kernels that died."""
        now = time.time()
        for live in list(self._live.values()):
            record = await asyncio.to_thread(self.db.get_session, live.id)
            if record is None:
                continue
            if now - live.created_at > live.max_lifetime:
                await self.destroy(
                    record,
                    kind="lifetime_reached",
                    reason="max_lifetime",
                    message=f"ended: the session reached its maximum lifetime of "
                    f"{live.max_lifetime:g} s (its files are kept)",
                    keep_files=True,
                )
            elif live.busy == 0 and now - live.last_used > live.idle_timeout:
                await self.destroy(
                    record,
                    kind="idle_reaped",
                    reason="idle_timeout",
                    message=f"ended: the session ran no code for {live.idle_timeout:g} s "
                    "(its idle timeout; its files are kept)",
                    keep_files=True,
                )
            elif live.busy == 0 and not live.dead and not self.agent.state(live.id).alive:
                await self._mark_dead(live.id, live)
