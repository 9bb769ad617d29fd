"""Backend.AI's query-mode runs: a run outlives the HTTP call that started it (its runId);
`continue` and `input` calls pick it up, and a restarted service's agent kept it going."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cogbox.kernel.events import Event, Finished, InputRequest, KernelDied
from cogbox.service.agent import BatchCommand
from cogbox.service.console import result_body
from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError, bad_request, problem_or_internal
from cogbox.service.sessions import SessionManager


@dataclass
class QueryRun:
    """A query-mode run that outlives the HTTP call that started it (Backend.AI's runId)."""

    events: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    delivered: int = 0
    error: ServiceError | None = None


class QueryRuns:
    """Query-mode runs by (session, runId): a call returns what happened within `wait`
    seconds ("continued" if the run goes on); `continue` and `input` calls pick it up."""

    def __init__(self, manager: SessionManager, wait: float) -> None:
        self._manager = manager
        self._wait = wait
        self._runs: dict[tuple[str, str], QueryRun] = {}

    async def start(
        self, record: SessionRecord, run_id: str, code: str | BatchCommand
    ) -> dict[str, Any]:
        key = (record.id, run_id)
        if key in self._runs:
            raise bad_request(f"run {run_id!r} is still going: use mode 'continue'")
        run = QueryRun()
        self._runs[key] = run
        events = self._manager.execute(record, code, run_id=run_id)
        run.task = asyncio.create_task(self._pump(run, events))
        return await self._collect(record, run, run_id)

    async def resume(
        self, record: SessionRecord, run_id: str, answer: str | None = None
    ) -> dict[str, Any]:
        key = (record.id, run_id)
        run = self._runs.get(key)
        if run is None:  # maybe one a previous run of the service started: the agent kept it
            run = self._runs[key] = QueryRun()
            run.task = asyncio.create_task(self._pump(run, self._manager.resume(record, run_id)))
        if answer is not None:
            await self._manager.send_input(record, answer)
        return await self._collect(record, run, run_id)

    async def _pump(self, run: QueryRun, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                run.events.append(event)
                run.changed.set()
        except Exception as exc:  # e.g. the agent went away: its problem, never "finished"
            run.error = problem_or_internal(exc, "a query-mode run")
        finally:
            run.changed.set()

    async def _collect(self, record: SessionRecord, run: QueryRun, run_id: str) -> dict[str, Any]:
        key = (record.id, run_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            fresh = run.events[run.delivered :]
            last = fresh[-1] if fresh else None
            ended = run.task is not None and run.task.done()
            if isinstance(last, Finished | KernelDied | InputRequest) or ended:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            run.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.changed.wait(), remaining)
        fresh = run.events[run.delivered :]
        run.delivered = len(run.events)
        if fresh:  # a restarted service's `continue` picks the run up after these
            await self._manager.ack(record, run_id, len(fresh))
        if run.error is not None and not fresh:
            self._runs.pop(key, None)
            raise run.error
        body = result_body(run_id, fresh)
        if body["status"] in ("finished", "exec-timeout") or (run.task and run.task.done()):
            self._runs.pop(key, None)
            if body["status"] == "continued":
                body["status"] = "finished"
        return body
