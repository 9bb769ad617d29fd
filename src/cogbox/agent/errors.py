"""The agent channel's own errors (apart, so the service's error table can name them without
importing the channel)."""

from cogbox.kernel.errors import KernelError


class ChannelError(KernelError):
    """The agent channel broke, or the peer said something this side does not understand."""


class AgentAuthError(ChannelError):
    """The peer could not prove it holds the agent key (or proved another one)."""
