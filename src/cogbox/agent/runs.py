"""Runs the agent owns: each execution's events, numbered, in a bounded buffer.

A run outlives whoever watches it: the manager follows it, and when the manager goes away
(`kill -9` of `cogbox serve`) the run goes on filling its buffer and the session's log; the
next manager follows it again from the count it had delivered (`acked`). The buffer keeps the
newest `limit` characters' worth of events; a follower that fell behind the oldest kept event
is told once, with an OutputTruncated naming how many it missed, then gets the rest.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from cogbox.kernel.events import (
    Event,
    Finished,
    KernelDied,
    OutputTruncated,
    event_size,
)

RUN_BUFFER_SIZE = 4 << 20  # characters of one run's events kept for a follower
FINISHED_KEPT = 4  # finished runs a session keeps for a late follower


class Run:
    """One execution's numbered events (0, 1, ...), the newest within `limit` kept."""

    def __init__(self, session_id: str, run_id: str, limit: int = RUN_BUFFER_SIZE) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self.limit = limit
        self.acked = 0  # events the manager says it delivered (a restarted one resumes there)
        self.abandoned = False  # its follower cancelled it: the pump stops at the next event
        self.done = False
        self.begun = False  # its kernel was handed the run (not waiting for an earlier one)
        self._begun = asyncio.Event()
        self.error: BaseException | None = None
        self._events: deque[Event] = deque()
        self._first = 0  # the number of _events[0]
        self._size = 0
        self._changed = asyncio.Event()

    @property
    def count(self) -> int:
        """How many events the run produced so far."""
        return self._first + len(self._events)

    @property
    def delivered(self) -> bool:
        return self.done and self.acked >= self.count

    def append(self, event: Event) -> None:
        self._events.append(event)
        self._size += event_size(event)
        while self._size > self.limit and len(self._events) > 1:
            self._size -= event_size(self._events.popleft())
            self._first += 1
        self._notify()

    def set_begun(self) -> None:
        self.begun = True
        self._begun.set()

    async def wait_begun(self) -> None:
        await self._begun.wait()

    def finish(self, error: BaseException | None = None) -> None:
        self.done = True
        self.error = error
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """(number, event) from event `after` on, live until the run ends (its terminal
        event is the last); raises what ended the run, if an error did."""
        seq = after
        while True:
            if seq < self._first:
                missed = self._first - seq
                seq = self._first
                yield (
                    seq - 1,
                    OutputTruncated(
                        self.limit,
                        f"output truncated: {missed:,} events of this run were dropped while "
                        f"nobody followed it (the agent keeps the newest {self.limit:,} "
                        "characters of a run); they are in the session's log",
                    ),
                )
                continue
            if seq < self.count:
                event = self._events[seq - self._first]
                seq += 1
                yield seq - 1, event
                if isinstance(event, Finished | KernelDied):
                    return
                continue
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()


class Runs:
    """The runs of every session, by (session id, run id)."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], Run] = {}

    def get(self, session_id: str, run_id: str) -> Run | None:
        return self._runs.get((session_id, run_id))

    def add(self, run: Run) -> None:
        self._prune(run.session_id)
        self._runs[(run.session_id, run.run_id)] = run

    def of(self, session_id: str) -> list[Run]:
        return [run for (sid, _), run in self._runs.items() if sid == session_id]

    def drop(self, session_id: str) -> None:
        for run in self.of(session_id):
            del self._runs[(session_id, run.run_id)]

    def _prune(self, session_id: str) -> None:
        finished = [run for run in self.of(session_id) if run.done]
        for run in list(finished):
            if run.delivered or len(finished) > FINISHED_KEPT:
                del self._runs[(session_id, run.run_id)]
                finished.remove(run)
