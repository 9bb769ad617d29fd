"""Batch sessions (jobs): a command that runs once in /home/work, then the session ends.

A job is a session of type "batch" with a startup command. It is recorded `pending` at once
and the request returns; the service runs it detached from any client:

    pending --(its dependencies all succeeded, and the keypair has room)--> starting
            --> running (the command runs as Backend.AI's batch mode runs a command)
            --> terminated, result SUCCESS (exit status 0) or FAILURE (anything else,
                its time limit, the jail's end), its exit status and the reason kept
    pending --(a dependency failed, or the owner destroyed it)--> cancelled

A job over its keypair's concurrent-session or memory limit is not refused: it waits
`pending`, its status_info saying why, until a session of the keypair ends. Its files and
its full log are kept after it ended. Pending jobs are held in memory: if the service
restarts, they are recorded cancelled (their environment was never stored). A running job's
command is a run the agent owns under a fixed name (`JOB_RUN`), so it goes on while the
service is down, and the next service follows it to its end from the agent (`JobQueue.reattach`).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cogbox.kernel.events import Event, Finished, KernelDied
from cogbox.service.agent import BatchCommand, KernelState
from cogbox.service.db import KeypairRecord, SessionRecord
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.status import SessionStatus

if TYPE_CHECKING:
    from cogbox.service.sessions import CreateRequest, SessionManager
    from cogbox.service.vfolders import FolderMount

log = logging.getLogger(__name__)

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
_FAILED_STATUSES = (SessionStatus.ERROR, SessionStatus.LOST, SessionStatus.CANCELLED)
_PASS_INTERVAL_S = 1.0  # a pass also runs this often, whatever woke it (or did not)
JOB_RUN = "job"  # the run id of a job's command in its session: a restarted service asks for it


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: its result, its command's exit status, a short reason for the
    session's status_info and a sentence for its events."""

    result: str
    exit_code: int | None
    reason: str
    message: str


def job_outcome(terminal: Finished | KernelDied | None, problem: str = "") -> JobOutcome:
    """The outcome of a job whose run ended with `terminal` (None: it never got one, and
    `problem` says why)."""
    if isinstance(terminal, Finished):
        code = terminal.exit_code
        if terminal.status == "timeout":
            return JobOutcome(FAILURE, code, "batch-timeout", terminal.message)
        if code == 0:
            return JobOutcome(SUCCESS, 0, "exit 0", "the job's command exited with status 0")
        if code is None:
            return JobOutcome(FAILURE, None, "no-exit-status", terminal.message)
        why = f"exit {code}"
        message = terminal.message or f"the job's command exited with status {code}"
        if code > 128:
            why += f" (signal {code - 128})"
            message += f" (killed by signal {code - 128})"
        return JobOutcome(FAILURE, code, why, message)
    if isinstance(terminal, KernelDied):
        return JobOutcome(
            FAILURE,
            terminal.returncode,
            terminal.reason,
            f"the job's jail ended: {terminal.message}",
        )
    return JobOutcome(FAILURE, None, "job-failed", problem or "the job's command did not run")


def dependency_state(dependency: SessionRecord | None) -> str:
    """ "done", "failed" or "waiting": whether a job may start after `dependency`."""
    if dependency is None or dependency.status in _FAILED_STATUSES:
        return "failed"
    if dependency.result == FAILURE:
        return "failed"
    if dependency.status == SessionStatus.TERMINATED:
        return "done"
    return "waiting"


@dataclass
class _Job:
    """A pending job: what it needs to start, and its dependencies' session ids."""

    session_id: str
    name: str
    keypair: KeypairRecord
    request: "CreateRequest"
    memory: int
    depends: list[str]
    mounts: list["FolderMount"]  # its storage folders, checked when it was submitted
    shown: str = ""  # the status_info last recorded, so a pass writes only changes
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class JobQueue:
    """Pending jobs, started in order as their dependencies and limits allow."""

    def __init__(self, manager: "SessionManager") -> None:
        self._manager = manager
        self._pending: dict[str, _Job] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._passing = asyncio.Lock()  # one pass at a time: a job is started once
        self._scheduler: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule_forever())

    async def close(self) -> None:
        tasks = [t for t in (self._scheduler, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pending.clear()

    def wake(self) -> None:
        """Something changed (a session ended): look at the pending jobs again."""
        self._wake.set()

    async def resolve_dependencies(self, keypair: KeypairRecord, refs: list[str]) -> list[str]:
        """The session ids of `refs` (ids or names of the keypair's sessions); 400 naming
        the field for one that does not exist."""
        ids: list[str] = []
        for ref in refs:
            try:
                ids.append((await self._manager.find(keypair, ref)).id)
            except ServiceError as exc:
                raise bad_request(
                    f"'dependencies': no session {ref!r} of this keypair to depend on"
                ) from exc
        return ids

    async def submit(self, job: _Job) -> None:
        self._pending[job.session_id] = job
        await self._pass()

    def withdraw(self, session_id: str) -> bool:
        """Take a job that has not started off the queue; False if it is not pending."""
        return self._pending.pop(session_id, None) is not None

    def job(
        self,
        session_id: str,
        name: str,
        keypair: KeypairRecord,
        request: "CreateRequest",
        memory: int,
        depends: list[str],
        mounts: list["FolderMount"],
    ) -> _Job:
        return _Job(session_id, name, keypair, request, memory, depends, mounts)

    # ------------------------------------------------------------------ scheduling

    async def _schedule_forever(self) -> None:
        while True:
            # Not wait_for: on 3.11 it swallows a cancel that races the wake-up, and close()
            # then waits forever (tests/service/test_manager_fast.py).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PASS_INTERVAL_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._pass()
            except Exception:
                log.exception("a pass over the pending jobs failed; retrying")

    async def _pass(self) -> None:
        """Start every pending job that may start now, in the order they were submitted."""
        async with self._passing:
            for job in list(self._pending.values()):
                if job.session_id in self._pending:  # else withdrawn meanwhile
                    await self._consider(job)

    async def _consider(self, job: _Job) -> None:
        """Start `job`, cancel it, or note why it still waits."""
        manager = self._manager
        keypair = await asyncio.to_thread(manager.db.get_keypair, job.keypair.access_key)
        if keypair is None or not keypair.is_active:
            if self._pending.pop(job.session_id, None) is None:
                return  # withdrawn while the pass waited
            await self._end_unstarted(job, "keypair-revoked", "its keypair was revoked")
            return
        job.keypair = keypair  # its limits as they are now
        states: dict[str, str] = {}
        for dep in job.depends:
            states[dep] = dependency_state(await asyncio.to_thread(manager.db.get_session, dep))
        failed = [dep for dep, state in states.items() if state == "failed"]
        if failed:
            if self._pending.pop(job.session_id, None) is None:
                return  # withdrawn while the pass waited
            names = ", ".join([await self._name_of(dep) for dep in failed])
            await self._end_unstarted(
                job,
                "dependency-failed",
                f"the session(s) it depends on did not succeed: {names}",
            )
            return
        waiting = [dep for dep, state in states.items() if state == "waiting"]
        if waiting:
            waited = ", ".join([await self._name_of(dep) for dep in waiting])
            await self._show(job, f"waiting for dependencies: {waited}")
            return
        try:
            release = manager.reserve(job.keypair, job.memory)
        except ServiceError as exc:
            await self._show(job, f"waiting ({exc.code}): {exc.message}")
            return
        if self._pending.pop(job.session_id, None) is None:
            release()
            return  # withdrawn while the pass waited
        task = asyncio.create_task(self._run(job, release))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _name_of(self, session_id: str) -> str:
        record = await asyncio.to_thread(self._manager.db.get_session, session_id)
        return record.name if record is not None else session_id

    async def _show(self, job: _Job, why: str) -> None:
        if why != job.shown:
            job.shown = why
            await self._manager.set_status(job.session_id, SessionStatus.PENDING, why, why)

    async def _end_unstarted(self, job: _Job, reason: str, why: str) -> None:
        await self.cancelled(job.session_id, reason, f"cancelled: {why}")

    async def cancelled(self, session_id: str, reason: str, message: str) -> None:
        """Record a job that never started as cancelled, a failure."""
        await asyncio.to_thread(self._manager.db.update_session, session_id, result=FAILURE)
        await self._manager.set_status(session_id, SessionStatus.CANCELLED, reason, message)
        self.wake()  # jobs that depend on this one are cancelled in turn

    # ------------------------------------------------------------------ running

    async def _run(self, job: _Job, release: Callable[[], None]) -> None:
        manager = self._manager
        try:
            try:
                record = await manager.launch(job.session_id, job.keypair, job.request, job.mounts)
            finally:
                release()
        except ServiceError as exc:  # recorded `error` by launch; a failed job all the same
            await asyncio.to_thread(manager.db.update_session, job.session_id, result=FAILURE)
            log.info("job %s did not start: %s", job.session_id, exc.message)
            self.wake()
            return
        except asyncio.CancelledError:
            raise
        command = BatchCommand(None, job.request.startup_command or "")
        await self._follow(
            record, lambda: manager.execute(record, command, job.request.batch_timeout, JOB_RUN)
        )

    def reattach(self, record: SessionRecord, state: KernelState) -> None:
        """Follow a job that a previous run of the service started: its command went on in
        the agent; its end (or its jail's) is recorded as if the service had never stopped."""
        if not state.alive:
            died = KernelDied(state.reason, state.message)
            task = asyncio.create_task(self.finish(record, job_outcome(died)))
        else:
            task = asyncio.create_task(
                self._follow(record, lambda: self._manager.resume(record, JOB_RUN))
            )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _follow(self, record: SessionRecord, run: Callable[[], AsyncIterator[Event]]) -> None:
        """Read the job's run to its terminal event, then record how the job ended."""
        terminal: Finished | KernelDied | None = None
        problem = ""
        try:
            events = run()
            try:
                async for event in events:
                    if isinstance(event, Finished | KernelDied):
                        terminal = event
            finally:
                await events.aclose()  # type: ignore[attr-defined]
        except ServiceError as exc:
            problem = exc.message
        except Exception as exc:
            log.exception("job %s failed", record.id)
            problem = f"the job could not run: {exc}"
        await self.finish(record, job_outcome(terminal, problem))

    async def finish(self, record: SessionRecord, outcome: JobOutcome) -> None:
        """Record how the job ended and end its session (files and log kept)."""
        manager = self._manager
        current = await asyncio.to_thread(manager.db.get_session, record.id)
        if current is not None and current.status in (
            SessionStatus.TERMINATED,
            SessionStatus.CANCELLED,
        ):
            # Its owner destroyed it while it ran: a failure, whatever the command said.
            await asyncio.to_thread(manager.db.update_session, record.id, result=FAILURE)
            self.wake()
            return
        await asyncio.to_thread(
            manager.db.update_session, record.id, result=outcome.result, exit_code=outcome.exit_code
        )
        await manager.destroy(
            record,
            kind="job_finished",
            reason=outcome.reason,
            message=outcome.message,
            keep_files=True,
        )
        self.wake()


def dependencies_json(ids: list[str]) -> str | None:
    return json.dumps(ids) if ids else None


def dependencies_of(record: SessionRecord) -> list[str]:
    """The session ids a job depends on ([] for other sessions)."""
    if not record.dependencies:
        return []
    try:
        ids = json.loads(record.dependencies)
    except ValueError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []
