"""The one event model for what running code produces: every API surface speaks these.

A kernel's Jupyter messages are translated into these small typed events once, here in
`cogbox.kernel`; the CLI (and later the HTTP service) adapt them at their edge, they never
look at Jupyter messages themselves. One `Session.execute` call yields any number of output
events and then exactly one terminal event: `Finished`, or `KernelDied` when the jail ended.
"""

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

FinishedStatus = Literal["ok", "error", "aborted", "timeout"]


@dataclass(frozen=True)
class Stdout:
    """Text the code wrote to standard output (Python's or, where captured, C's fd 1)."""

    text: str
    kind: ClassVar[str] = "stdout"


@dataclass(frozen=True)
class Stderr:
    """Text the code wrote to standard error."""

    text: str
    kind: ClassVar[str] = "stderr"


@dataclass(frozen=True)
class Display:
    """Rich output shown by the code (`display(...)`, plots): MIME type -> content.

    Binary types (image/png, ...) arrive base64-encoded, as Jupyter sends them; JSON types
    are serialised to a string so every value is text.
    """

    data: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "display"


@dataclass(frozen=True)
class Result:
    """The value of the last expression of a run (Jupyter's `Out[n]`), as MIME type -> text."""

    data: dict[str, str]
    execution_count: int | None = None
    kind: ClassVar[str] = "result"


@dataclass(frozen=True)
class Error:
    """An exception the code did not catch; `traceback` lines may hold ANSI colour codes."""

    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "error"


@dataclass(frozen=True)
class InputRequest:
    """The code called `input()`/`getpass()`: answer with `Session.send_input` (or `on_input`)."""

    prompt: str
    password: bool = False
    kind: ClassVar[str] = "input_request"


@dataclass(frozen=True)
class OutputTruncated:
    """The run's output passed the session's cap; later output of this run is dropped."""

    limit_chars: int
    message: str
    kind: ClassVar[str] = "output_truncated"


@dataclass(frozen=True)
class Finished:
    """The run ended and the kernel is ready for the next one (terminal event).

    For a batch run (`Session.execute_batch`) `exit_code` is the exit status of the command
    that ran last, and `status` is "ok" only when it is 0.
    """

    status: FinishedStatus
    execution_count: int | None = None
    message: str = ""  # set when cogbox itself ended the run (time limit) or a batch failed
    exit_code: int | None = None  # batch runs: the command's exit status (None for code)
    kind: ClassVar[str] = "finished"


@dataclass(frozen=True)
class KernelDied:
    """The kernel's jail ended (terminal event); `reason` is the jail's `ExitReason` value.

    `message` names the limit that was hit, e.g. "killed: out of memory (memory limit 256
    MiB)". The session's variables are gone; `Session.restart` starts a fresh kernel with the
    same /home/work.
    """

    reason: str
    message: str
    returncode: int | None = None
    kind: ClassVar[str] = "kernel_died"


Event = (
    Stdout
    | Stderr
    | Display
    | Result
    | Error
    | InputRequest
    | OutputTruncated
    | Finished
    | KernelDied
)
TerminalEvent = Finished | KernelDied


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Stdout,
        Stderr,
        Display,
        Result,
        Error,
        InputRequest,
        OutputTruncated,
        Finished,
        KernelDied,
    )
}
_FIELDS: dict[type[Event], frozenset[str]] = {
    cls: frozenset(f.name for f in fields(cls)) for cls in EVENT_TYPES.values()
}
# What one event weighs in a bounded buffer beyond its text, so that many tiny events
# (a kernel can forge any number) are bounded too.
EVENT_COST = 256


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of `event`, with its `kind` ("stdout", "finished", ...) included.
    Shallow (its values are the event's own): a run's every event passes here, and
    `asdict`'s deep copy was most of the cost."""
    return {"kind": event.kind, **vars(event)}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event `event_to_dict` gave (keys its kind does not have are ignored); ValueError
    naming the kind if it is none of the events."""
    cls = EVENT_TYPES.get(str(data.get("kind")))
    if cls is None:
        raise ValueError(f"an unknown event kind {data.get('kind')!r}")
    names = _FIELDS[cls]
    event: Event = cls(**{key: value for key, value in data.items() if key in names})
    return event


def event_size(item: object) -> int:
    """What `item` (an event, or any other queued item) weighs in a bounded buffer:
    its text plus `EVENT_COST`."""
    if isinstance(item, Stdout | Stderr):
        return EVENT_COST + len(item.text)
    if isinstance(item, Display | Result):
        return EVENT_COST + sum(len(value) for value in item.data.values())
    if isinstance(item, Error):
        return EVENT_COST + len(item.ename) + len(item.evalue) + sum(map(len, item.traceback))
    return EVENT_COST


def mime_bundle(data: dict[str, Any]) -> dict[str, str]:
    """A Jupyter MIME bundle with every value as text (JSON values are serialised)."""
    return {
        mime: value if isinstance(value, str) else json.dumps(value) for mime, value in data.items()
    }
