"""The per-run output cap: a run shows at most `limit` characters, then one notice."""

from collections.abc import Iterator

from cogbox.kernel.events import Display, Error, Event, OutputTruncated, Result, Stderr, Stdout


class OutputCap:
    """Counts the characters of a run's output and cuts it at the limit, once, with notice."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.truncated = False

    def admit(self, event: Event | None) -> Iterator[Event]:
        if event is None:
            return
        if isinstance(event, Error):
            yield event  # never dropped: it says why the run failed
            return
        if self.truncated:
            return
        size = _size(event)
        if self.used + size <= self.limit:
            self.used += size
            yield event
            return
        room = self.limit - self.used
        if room > 0 and isinstance(event, Stdout | Stderr):
            yield type(event)(event.text[:room])
        self.used = self.limit
        self.truncated = True
        yield OutputTruncated(
            self.limit,
            f"output truncated: this run printed more than {self.limit:,} characters "
            "(the session's output limit); the rest of its output is discarded while the "
            "code keeps running",
        )


def _size(event: Event) -> int:
    if isinstance(event, Stdout | Stderr):
        return len(event.text)
    if isinstance(event, Display | Result):
        return sum(len(value) for value in event.data.values())
    return 0
