"""Jupyter Server's WebSocket wire format, both ways: a client's frame (one JSON text frame,
or the binary frame with buffer offsets) in, a kernel's message (as the relay carries it)
out, and the few messages this surface writes itself."""

import json
import struct
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session as Messages
from jupyter_client.session import json_packer

from cogbox.kernel.relay import RelayMessage
from cogbox.service.bodies import parse_json_object
from cogbox.service.errors import ServiceError

_DECODE_MAX_BYTES = 64 << 10  # bigger contents are relayed as they came, never parsed


def default_channel(msg: dict[str, Any]) -> str:
    """The channel of a client message that names none: shell, as in Jupyter Server, but
    `input_reply` only makes sense on stdin."""
    header = msg.get("header")
    kind = header.get("msg_type") if isinstance(header, dict) else None
    return "stdin" if kind == "input_reply" else "shell"


def from_json(text: str) -> tuple[dict[str, Any], list[bytes]] | None:
    try:
        msg = parse_json_object(text, "the message")
    except ServiceError:
        return None
    return _checked(msg, [])


def _checked(msg: object, buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]] | None:
    if not isinstance(msg, dict):
        return None
    for key in ("header", "parent_header", "metadata", "content"):
        msg.setdefault(key, {})
        if not isinstance(msg[key], dict):
            return None
    msg.pop("buffers", None)
    return msg, buffers


def from_binary(data: bytes) -> tuple[dict[str, Any], list[bytes]] | None:
    """Jupyter's legacy binary frame: count, offsets (big-endian uint32), JSON, buffers."""
    try:
        (count,) = struct.unpack("!I", data[:4])
        offsets = list(struct.unpack(f"!{count}I", data[4 : 4 * (count + 1)]))
        offsets.append(len(data))
        parts = [data[offsets[i] : offsets[i + 1]] for i in range(count)]
        msg = parse_json_object(parts[0], "the message")
    except (struct.error, IndexError, ServiceError):
        return None
    return _checked(msg, parts[1:])


def to_binary(msg: dict[str, Any], buffers: list[bytes]) -> bytes:
    parts = [json.dumps(msg, default=json_default).encode(), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def encode(msg: dict[str, Any]) -> str | bytes:
    """A kernel message as Jupyter Server's WebSocket frame; a content still packed (big
    output) is spliced in as the JSON it already is."""
    buffers = [bytes(buffer) for buffer in msg.pop("buffers", None) or []]
    content = msg.get("content")
    if isinstance(content, bytes | memoryview):
        rest = {key: value for key, value in msg.items() if key != "content"}
        head = json.dumps(rest, default=json_default)
        text = head[:-1] + ', "content": ' + bytes(content).decode("utf-8", "replace") + "}"
        if not buffers:
            return text
        msg = {**rest, "content": json.loads(text)["content"]}
    if buffers:
        return to_binary(msg, buffers)
    return json.dumps(msg, default=json_default)


def outgoing(channel: str, msg: dict[str, Any], buffers: list[bytes]) -> RelayMessage:
    """A client's message as the relay carries it (the agent signs it)."""
    parts = [json_packer(msg[key]) for key in ("header", "parent_header", "metadata", "content")]
    return RelayMessage(channel, parts, buffers)


def incoming(relayed: RelayMessage) -> dict[str, Any] | None:
    """A kernel's message as this surface handles it: a content bigger than
    `_DECODE_MAX_BYTES` stays packed (a 1 MB output is not parsed per client), smaller ones
    are read (the relay looks at status messages)."""
    header, parent, metadata, content = relayed.parts
    try:
        msg: dict[str, Any] = {
            "header": json.loads(header),
            "parent_header": json.loads(parent),
            "metadata": json.loads(metadata),
            "content": json.loads(content) if len(content) <= _DECODE_MAX_BYTES else content,
        }
    except ValueError:
        return None
    if not all(isinstance(msg[key], dict) for key in ("header", "parent_header", "metadata")):
        return None
    msg["msg_id"] = msg["header"].get("msg_id")
    msg["msg_type"] = msg["header"].get("msg_type")
    msg["channel"] = relayed.channel
    if relayed.buffers:
        msg["buffers"] = relayed.buffers
    return msg


_MESSAGES = Messages(key=b"")  # builds this surface's own messages (clients check no key)


def dropped_notice(count: int, parent: dict[str, Any]) -> dict[str, Any]:
    text = (
        f"[cogbox: {count} output messages were dropped: this client read slower than the "
        "kernel printed]\n"
    )
    msg = _MESSAGES.msg("stream", {"name": "stderr", "text": text}, parent=parent)
    msg["channel"] = "iopub"
    return msg


def status_message(state: str) -> dict[str, Any]:
    msg = _MESSAGES.msg("status", {"execution_state": state})
    msg["channel"] = "iopub"
    return msg
