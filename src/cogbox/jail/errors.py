"""The jail part's one error type: the jail could not be set up or started."""

from cogbox.errors import CogboxError


class JailError(CogboxError):
    """The jail could not be set up or started (not: the jailed command failed)."""
