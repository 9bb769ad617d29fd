"""cogbox events as Backend.AI's console items and run statuses (the edge adapter).

Backend.AI's clients read `console` as a list of `[kind, payload]` items: `stdout`/`stderr`
with text, `media` with `[mime type, data]`, `html` with markup. Inside cogbox there is one
event model; this module is the only place that knows Backend.AI's shapes.
"""

import re
from typing import Any

from cogbox.kernel.events import (
    Display,
    Error,
    Event,
    Finished,
    InputRequest,
    KernelDied,
    OutputTruncated,
    Result,
    Stderr,
    Stdout,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MEDIA = ("image/png", "image/jpeg", "image/svg+xml", "image/gif", "application/pdf")
EXIT_TIMEOUT = 124


def console_items(event: Event) -> list[list[Any]]:
    """The console items showing `event` (none for terminal events)."""
    if isinstance(event, Stdout):
        return [["stdout", event.text]]
    if isinstance(event, Stderr):
        return [["stderr", event.text]]
    if isinstance(event, Result | Display):
        for mime in _MEDIA:
            if mime in event.data:
                return [["media", [mime, event.data[mime]]]]
        if "text/html" in event.data:
            return [["html", event.data["text/html"]]]
        if "text/plain" in event.data:
            return [["stdout", event.data["text/plain"] + "\n"]]
        return []
    if isinstance(event, Error):
        text = "\n".join(event.traceback) or f"{event.ename}: {event.evalue}"
        return [["stderr", _ANSI.sub("", text) + "\n"]]
    if isinstance(event, OutputTruncated):
        return [["stderr", f"\n{event.message}\n"]]
    if isinstance(event, InputRequest):
        return [["stdout", event.prompt]] if event.prompt else []
    if isinstance(event, KernelDied):
        return [["stderr", f"the kernel died: {event.message}\n"]]
    return []


def run_status(event: Event) -> str:
    """Backend.AI's status of a run after `event`."""
    if isinstance(event, InputRequest):
        return "waiting-input"
    if isinstance(event, Finished) and event.status == "timeout":
        return "exec-timeout"
    if isinstance(event, Finished | KernelDied):
        return "finished"
    return "continued"


def exit_code(event: Event) -> int | None:
    """The run's exit code once it ended: 0 ok, 1 error, 124 time limit, the jail's status."""
    if isinstance(event, Finished):
        if event.exit_code is not None:
            return event.exit_code
        if event.status == "timeout":
            return EXIT_TIMEOUT
        return 0 if event.status == "ok" else 1
    if isinstance(event, KernelDied):
        return event.returncode if event.returncode else 1
    return None


def result_body(run_id: str, events: list[Event]) -> dict[str, Any]:
    """Backend.AI's execution result object for the events of one call."""
    status = run_status(events[-1]) if events else "continued"
    console: list[list[Any]] = []
    for event in events:
        console.extend(console_items(event))
    options: dict[str, Any] = {}
    if status == "waiting-input":
        last = events[-1]
        options["is_password"] = isinstance(last, InputRequest) and last.password
    return {
        "runId": run_id,
        "status": status,
        "exitCode": exit_code(events[-1]) if events else None,
        "options": options,
        "files": [],
        "console": console,
    }
