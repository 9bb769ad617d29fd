"""The kernel part's error type."""

from cogbox.errors import CogboxError


class KernelError(CogboxError):
    """A kernel could not be started or talked to, or the session was used wrongly."""


class KernelGone(KernelError):
    """The kernel's jail ended while nobody was attached to it (see `Session.attach`).

    `reason` is the jail's `ExitReason` value ("oom", "wall_time", "killed", ...), as a
    `KernelDied` event has it.
    """

    def __init__(
        self, reason: str, message: str, *, limit_hit: bool = False, returncode: int | None = None
    ) -> None:
        super().__init__(f"the session's kernel is gone: {message}")
        self.reason = reason
        self.message = message
        self.limit_hit = limit_hit
        self.returncode = returncode
