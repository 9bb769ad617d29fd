"""What one run sends the kernel (an execute_request) and how its reply becomes `Finished`:
code as typed, or Backend.AI's batch mode (a build and an exec command, run as processes)."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Finished

# Sent in-band in each batch request: the host writes nothing into a jail-writable folder.
_BATCH_RUNNER_SOURCE = (Path(__file__).with_name("batch_runner.py")).read_text()


@dataclass(frozen=True)
class RunRequest:
    """One execute_request, and how its execute_reply becomes the terminal event."""

    code: str
    store_history: bool = True
    user_expressions: dict[str, str] | None = None
    finish: Callable[[dict[str, Any]], Finished] = lambda reply: code_finished(reply)
    run_id: str | None = None
    note: dict[str, Any] | None = None  # kept with the run while it is in flight (PendingRun)

    def content(self) -> dict[str, Any]:
        """The execute_request's content."""
        return {
            "code": self.code,
            "silent": False,
            "store_history": self.store_history,
            "user_expressions": self.user_expressions or {},
            "allow_stdin": True,
            # Each run is its own request, sent after the one before ended: an error must not
            # abort it. With True, ipykernel 7 aborts an execute that reaches it before its
            # "stop aborting" marker, which a run sent right after an interrupted one did.
            "stop_on_error": False,
        }

    @property
    def batch(self) -> bool:
        """Whether this runs batch commands (its exit status is in the reply, not in output)."""
        return self.finish is batch_finished


def code_finished(reply: dict[str, Any]) -> Finished:
    status = reply.get("status", "error")
    return Finished(
        status if status in ("ok", "error", "aborted") else "error", reply.get("execution_count")
    )


def timeout_finished(count: int | None, timeout: float | None) -> Finished:
    """The end of a run its time limit interrupted (the kernel lives on)."""
    return Finished(
        "timeout",
        count,
        f"stopped: the run passed its time limit of {timeout or 0:g} s and was interrupted; "
        "the session's variables are kept",
    )


def batch_request(build: str | None, exec: str, run_id: str | None) -> RunRequest:
    """The request that runs `build` (if any), then `exec`, with the batch runner;
    KernelError for an empty `exec`."""
    if not exec.strip():
        raise KernelError("the exec command is empty; give a shell command to run")
    # The runner's source travels as a literal (ASCII, so the same on Python 2.7 and 3).
    code = (
        f"_cogbox_batch = {{'__name__': '_cogbox_batch'}}\n"
        f"exec(compile({_BATCH_RUNNER_SOURCE!r}, '<cogbox batch runner>', 'exec'), "
        "_cogbox_batch)\n"
        f"_cogbox_batch = _cogbox_batch['run_batch']"
        f"({_bytes_literal(build)}, {_bytes_literal(exec)})\n"
    )
    return RunRequest(
        code,
        store_history=False,
        user_expressions={"batch": "_cogbox_batch"},
        finish=batch_finished,
        run_id=run_id,
    )


_BATCH_RESULT = re.compile(r"^\((\d+), (-?\d+)\)$")


def batch_finished(reply: dict[str, Any]) -> Finished:
    if reply.get("status") != "ok":
        return Finished("error", None, "the batch command could not be run (see the error)")
    result = reply.get("user_expressions", {}).get("batch", {})
    text = str(result.get("data", {}).get("text/plain", ""))
    match = _BATCH_RESULT.fullmatch(text)
    if result.get("status") != "ok" or match is None:
        return Finished("error", None, f"the batch runner reported no exit status ({text!r})")
    stage, code = int(match[1]), int(match[2])
    if code == 0:
        return Finished("ok", None, "", 0)
    which = "build" if stage == 0 else "exec"
    after = "; the exec command was not run" if stage == 0 else ""
    return Finished("error", None, f"the {which} command exited with status {code}{after}", code)


def _bytes_literal(command: str | None) -> str:
    # A bytes literal means the same bytes on Python 2.7 and 3 (a str literal would not).
    return "None" if command is None else repr(command.encode())
