"""A kernel's Jupyter messages in: its sockets waited on together, and what they say as
`cogbox.kernel.events` (the one place a kernel message becomes an event)."""

import queue
from typing import Any

import zmq

from cogbox.jail.launcher import JailExit
from cogbox.kernel.events import (
    Display,
    Error,
    Event,
    KernelDied,
    Result,
    Stderr,
    Stdout,
    mime_bundle,
)

# How long one wait on a kernel's sockets lasts before the caller checks the jail and clock.
POLL_MS = 50
DELIMITER = b"<IDS|MSG>"  # between a message's routing identities and its signature
_POLLIN = int(zmq.POLLIN)  # a plain int: no enum arithmetic
# Most messages taken from one socket per wait; held in memory together, and a kernel can
# send 1 MB ones (256 of them grew the service by as much during a flood).
_BATCH = 8


class Channels:
    """Waits on a kernel client's sockets together, returning decoded messages."""

    def __init__(self, client: Any, *, iopub: bool = True, stdin: bool = True) -> None:
        self._channels = {"shell": client.shell_channel}
        if iopub:
            self._channels["iopub"] = client.iopub_channel
        if stdin:
            self._channels["stdin"] = client.stdin_channel
        self._poller = zmq.Poller()
        for channel in self._channels.values():
            self._poller.register(channel.socket, zmq.POLLIN)

    def receive(self, timeout_ms: int) -> list[tuple[str, dict[str, Any]]]:
        ready = dict(self._poller.poll(timeout_ms))
        messages: list[tuple[str, dict[str, Any]]] = []
        for name, channel in self._channels.items():
            # Take what is queued on a ready socket (bounded, so the caller still gets to
            # check the jail and the clock while a flood goes on).
            for _ in range(_BATCH if channel.socket in ready else 0):
                try:
                    messages.append((name, channel.get_msg(timeout=0)))
                except queue.Empty:
                    break
        return messages


def output_event(kind: str, content: dict[str, Any]) -> Event | None:
    """The event an IOPub message of type `kind` carries, or None (nothing to show)."""
    if kind == "stream":
        text = str(content.get("text", ""))
        return Stderr(text) if content.get("name") == "stderr" else Stdout(text)
    if kind in ("display_data", "update_display_data"):
        return Display(mime_bundle(content.get("data", {})), dict(content.get("metadata", {})))
    if kind == "execute_result":
        return Result(mime_bundle(content.get("data", {})), content.get("execution_count"))
    if kind == "error":
        return Error(
            str(content.get("ename", "")),
            str(content.get("evalue", "")),
            [str(line) for line in content.get("traceback", [])],
        )
    return None  # execute_input, clear_output, comm messages: nothing to show


def died(ended: JailExit, hint: str = "") -> KernelDied:
    """The terminal event of a run whose kernel's jail ended."""
    return KernelDied(str(ended.reason), ended.message + hint, ended.returncode)


def has_input(sock: "zmq.Socket[bytes]") -> bool:
    """Whether `sock` has a message waiting (asking is cheaper than a receive that fails:
    pyzmq raises for that); reading EVENTS also re-arms the socket's edge-triggered fd."""
    events = sock.get(zmq.EVENTS)
    return isinstance(events, int) and bool(events & _POLLIN)
