"""What crosses the agent channel: JSON frames, and the codec of the values they carry.

One text frame per message, small and flat: a call `{"i": id, "op": name, "a": {...}}`, its
answer `{"i": id, "r": result}` or `{"i": id, "e": {"type": ..., "message": ...}}`, a run's
event `{"i": id, "s": seq, "v": event}` and pushes `{"p": kind, ...}` (kernel states, pools).
A file's bytes go raw in a binary frame (`binary_out`): the call or answer as JSON after its
length, then at most one chunk (`CHUNK`), never base64 and never a whole file.
No host path crosses it: work dirs go by name, images by name@digest.
"""

import json
import struct
from dataclasses import asdict
from typing import Any

from cogbox.errors import CogboxError
from cogbox.images.store import ImageNotFound
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event, event_from_dict, event_to_dict
from cogbox.kernel.files import (
    FileEntry,
    FileError,
    PathNotFoundError,
    UnsafePathError,
    WorkdirFullError,
)
from cogbox.service.agent import WorkdirGone

# The errors that keep their type across the channel (the manager maps them to HTTP).
_ERRORS: dict[str, type[CogboxError]] = {
    cls.__name__: cls
    for cls in (
        UnsafePathError,
        WorkdirFullError,
        PathNotFoundError,
        FileError,  # after its subclasses: error_out names the first class that matches
        WorkdirGone,
        KernelError,
        ImageNotFound,
        CogboxError,
    )
}


class ChannelError(KernelError):
    """The agent channel broke, or the peer said something this side does not understand."""


class AgentAuthError(ChannelError):
    """The peer could not prove it holds the agent key (or proved another one)."""


CHUNK = 1 << 20  # the most file bytes one frame carries


def binary_out(message: dict[str, Any], data: bytes) -> bytes:
    """A call or answer that carries file bytes: 4-byte length, the JSON, the bytes."""
    head = dumps(message).encode()
    return struct.pack("!I", len(head)) + head + data


def binary_in(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """The inverse of `binary_out`; ChannelError for a frame that is not one."""
    if len(frame) < 4:
        raise ChannelError("a binary frame without its header")
    (size,) = struct.unpack("!I", frame[:4])
    if size > len(frame) - 4:
        raise ChannelError("a binary frame shorter than its header says")
    head = loads(frame[4 : 4 + size].decode("utf-8", "replace"))
    data = frame[4 + size :]
    if len(data) > CHUNK:
        raise ChannelError(f"a binary frame of {len(data):,} bytes (at most {CHUNK:,})")
    return head, data


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ChannelError(f"a frame that is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ChannelError("a frame that is not a JSON object")
    return message


def event_out(event: Event) -> dict[str, Any]:
    return event_to_dict(event)


def event_in(value: dict[str, Any]) -> Event:
    try:
        return event_from_dict(value)
    except ValueError as exc:
        raise ChannelError(f"the peer sent {exc}") from exc


def error_out(exc: BaseException) -> dict[str, str]:
    name = next((n for n, cls in _ERRORS.items() if type(exc) is cls), None)
    if name is None:
        name = next(n for n, cls in _ERRORS.items() if isinstance(exc, cls))
    return {"type": name, "message": str(exc)}


def error_in(value: dict[str, Any]) -> CogboxError:
    cls = _ERRORS.get(str(value.get("type")), CogboxError)
    return cls(str(value.get("message", "")))


def entry_out(entry: FileEntry) -> dict[str, Any]:
    return asdict(entry)


def entry_in(value: dict[str, Any]) -> FileEntry:
    return FileEntry(**value)
