"""A run's events waiting between the kernel's thread and the agent's event loop, bounded."""

import threading

from cogbox.kernel.events import (
    Event,
    Finished,
    InputRequest,
    KernelDied,
    OutputTruncated,
    event_size,
)


class QueuedEvents:
    """A run's events waiting for the event loop, bounded in size: past the bound events are
    dropped and counted, except those the run's progress needs (input requests, notices,
    terminal events)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def admit(self, event: Event) -> bool:
        size = event_size(event)
        with self._lock:
            if self.size + size > self.limit and not isinstance(event, NEVER_DROPPED):
                self.dropped += 1
                return False
            self.size += size
            return True

    def release(self, item: object) -> None:
        size = event_size(item)
        with self._lock:
            self.size -= size

    def notice(self) -> OutputTruncated:
        return OutputTruncated(
            self.limit,
            f"output truncated: {self.dropped:,} events of this run were dropped because "
            f"more than {self.limit:,} characters of them waited for a slow client",
        )


NEVER_DROPPED = (Finished, KernelDied, InputRequest, OutputTruncated)
