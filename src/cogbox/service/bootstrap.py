"""A session's bootstrap script (Backend.AI's `--bootstrap-script`): run once at its start.

The script runs as a batch command (`/bin/sh -c SCRIPT` in /home/work, inside the session's
jail, with the session's environment) after the kernel is up and before the session is
reported running, so it has finished before the first cell. Its output is recorded as a
`bootstrap` event (the last `TAIL_CHARS` of it). A script that exits non-zero, or runs past
the execution timeout, fails the create with 422 `bootstrap-failed` naming its exit status and
the end of its output; the session ends as `error` (its kernel stopped, its files kept).
"""

from typing import TYPE_CHECKING

from cogbox.kernel.events import Finished, KernelDied, Stderr, Stdout
from cogbox.service.agent import BatchCommand
from cogbox.service.errors import ServiceError

if TYPE_CHECKING:
    from cogbox.service.sessions import SessionManager

TAIL_CHARS = 2000


async def run_bootstrap(manager: "SessionManager", session_id: str, script: str) -> None:
    """Run `script` in the started kernel of `session_id`; raise ServiceError if it failed."""
    output = ""
    status: int | None = None
    ended = "it ended without a status"
    events = manager.agent.execute(
        session_id, BatchCommand(None, script), manager.config.execution_timeout
    )
    async for event in events:
        if isinstance(event, Stdout | Stderr):
            output = (output + event.text)[-TAIL_CHARS:]
        elif isinstance(event, Finished):
            status = event.exit_code
            if event.status == "timeout":
                ended = event.message or "it ran past the execution timeout"
                status = None
            elif status is None:
                ended = event.message or f"it ended with status {event.status!r}"
        elif isinstance(event, KernelDied):
            ended = f"the kernel died: {event.message}"
    summary = f"exit status {status}" if status is not None else ended
    await manager.record_event(session_id, "bootstrap", str(status), f"{summary}\n{output}")
    if status == 0:
        return
    message = f"the session's bootstrap script failed ({summary})" + (
        f"; the end of its output:\n{output}" if output else ""
    )
    await manager.agent.stop(session_id)
    await manager.mark_error(session_id, "bootstrap-failed", message)
    raise ServiceError(422, "bootstrap-failed", message)
