"""A bound on kernels starting at once, with a fair queue for those that wait.

A cold start (a jail, a Python, the image's preloads) is mostly CPU. Twenty of them at once
on two cores all finish late together: each takes the whole batch's time, and the sessions
already running starve meanwhile. With at most `limit` starting at once the first sessions
are ready early and the median wait for a first execution drops. A start also waits (the
jail's set-up, the kernel's handshake), so one per core leaves the cores idle meanwhile:
measured on 2 cores (20 python sessions at once, to first execution, under a shared load),
2 at once gave a p50 of 34-38 s and a worst of 55-61 s, 6 at once 18 s (worst 27 s), no bound
25-38 s (worst 26-39 s). The default is three per core; COGBOX_COLD_STARTS sets it.

Waiters are served strictly in arrival order (a ticket queue under one condition variable;
`threading.Semaphore` makes no such promise), so no start waits behind later ones. The
gate is used from the agent's threads; `waiting` and `running` are for reports.
"""

import os
import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


LIMIT_ENV = "COGBOX_COLD_STARTS"


def default_limit() -> int:
    """COGBOX_COLD_STARTS if set, else three per core this process may run on."""
    configured = os.environ.get(LIMIT_ENV)
    if configured:
        try:
            return max(1, int(configured))
        except ValueError as exc:
            raise ValueError(f"{LIMIT_ENV} must be a whole number, got {configured!r}") from exc
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 3 * max(1, cores)


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
