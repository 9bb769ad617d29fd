"""A bound on kernels starting at once, with a fair queue for those that wait.

A cold start (a jail, a Python, the image's preloads) is CPU-bound. Twenty of them at once
on two cores all finish late together: each takes the whole batch's time, and the sessions
already running starve meanwhile. With at most `limit` starting at once (by default the
cores this process may use) the first sessions are ready after one start's time and the
last no later than before, so the median wait for a first execution drops.

Waiters are served strictly in arrival order (a ticket queue under one condition variable;
`threading.Semaphore` makes no such promise), so no start waits behind later ones. The
gate is used from the agent's threads; `waiting` and `running` are for reports.
"""

import os
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def default_limit() -> int:
    """The cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class StartGate:
    """At most `limit` callers inside `run` at once; the others wait in FIFO order."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit if limit is not None else default_limit()
        if self.limit < 1:
            raise ValueError(f"the start limit must be at least 1, got {self.limit}")
        self._condition = threading.Condition()
        self._next_ticket = 0  # handed to the next arrival
        self._serving = 0  # tickets below this were let in
        self.running = 0  # let in and not yet done

    @property
    def waiting(self) -> int:
        with self._condition:
            return self._next_ticket - self._serving

    def run(self, start: Callable[[], _T]) -> _T:
        """`start()` once fewer than `limit` others run it and every earlier caller got in."""
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._admit()
            while ticket >= self._serving:
                self._condition.wait()
        try:
            return start()
        finally:
            with self._condition:
                self.running -= 1
                self._admit()
                self._condition.notify_all()

    def _admit(self) -> None:
        """Let the oldest waiters in while slots are free (under the condition)."""
        while self._serving < self._next_ticket and self.running < self.limit:
            self._serving += 1
            self.running += 1
