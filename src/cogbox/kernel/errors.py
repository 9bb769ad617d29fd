"""The kernel part's error type."""

from cogbox.errors import CogboxError


class KernelError(CogboxError):
    """A kernel could not be started or talked to, or the session was used wrongly."""
