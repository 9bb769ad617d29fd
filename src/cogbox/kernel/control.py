"""The wire of a kernel monitor's control socket: one request, one reply, per connection.

    request   one JSON object, then the client shuts its side down (at most 64 KiB)
    reply     4 bytes big-endian header length, the header (a JSON object), then
              `header["payload"]` raw bytes; fds (SCM_RIGHTS) ride on the header

The socket lives in the kernel's host-only folder (root, 0700) and is itself 0600; the
monitor also checks each peer's SO_PEERCRED and answers only root (or its own uid).
"""

import array
import asyncio
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogbox.kernel.errors import KernelError

MAX_REQUEST_BYTES = 64 << 10
_HEADER = struct.Struct(">I")
_MAX_HEADER_BYTES = 1 << 20
_MAX_FDS = 8
CONNECT_TIMEOUT_SECONDS = 10.0


class MonitorGone(KernelError):
    """The monitor does not answer: it ended (or its folder is gone)."""


@dataclass
class Reply:
    """A monitor's answer: the JSON header, its raw payload and any fds it handed over."""

    header: dict[str, Any]
    payload: bytes = b""
    fds: list[int] = field(default_factory=list)


def request(
    path: Path, op: str, timeout: float = CONNECT_TIMEOUT_SECONDS, **arguments: Any
) -> Reply:
    """Ask the monitor at `path`; MonitorGone if nobody listens, KernelError if it refuses."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    client.settimeout(timeout)
    try:
        try:
            client.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise _gone(exc) from exc
        client.sendall(_encode(op, arguments))
        client.shutdown(socket.SHUT_WR)
        try:
            reply = _read_reply(client)
        except (ConnectionError, EOFError) as exc:
            raise _ended(op) from exc
    except TimeoutError as exc:
        raise _late(op, timeout) from exc
    finally:
        client.close()
    return _accepted(op, reply)


async def arequest(
    path: Path, op: str, timeout: float = CONNECT_TIMEOUT_SECONDS, **arguments: Any
) -> Reply:
    """`request` for a caller on an asyncio loop, which it never blocks (a monitor slow to be
    scheduled would stall every session on that loop). For ops that hand over no fds: any
    sent anyway are discarded by the kernel, never received."""
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(str(path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise _gone(exc) from exc
            try:
                writer.write(_encode(op, arguments))
                writer.write_eof()
                try:
                    length = _length(await reader.readexactly(_HEADER.size))
                    header = json.loads(await reader.readexactly(length))
                    payload = await reader.readexactly(int(header.get("payload", 0)))
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    raise _ended(op) from exc
            finally:
                writer.close()
    except TimeoutError as exc:
        raise _late(op, timeout) from exc
    return _accepted(op, Reply(header, payload))


def _encode(op: str, arguments: dict[str, Any]) -> bytes:
    return json.dumps({"op": op, **arguments}).encode()


def _gone(exc: OSError) -> MonitorGone:
    return MonitorGone(f"the kernel's monitor is gone ({exc.strerror})")


def _ended(op: str) -> MonitorGone:
    return MonitorGone(f"the kernel's monitor ended while answering {op!r}")


def _late(op: str, timeout: float) -> KernelError:
    return KernelError(f"the kernel's monitor did not answer {op!r} in {timeout:g} s")


def _accepted(op: str, reply: Reply) -> Reply:
    if "error" in reply.header:
        for fd in reply.fds:
            os.close(fd)
        raise KernelError(f"the kernel's monitor refused {op!r}: {reply.header['error']}")
    return reply


def _length(prefix: bytes) -> int:
    (length,) = _HEADER.unpack(prefix)
    if length > _MAX_HEADER_BYTES:
        raise KernelError("the kernel's monitor sent an oversized reply header")
    return int(length)


def _read_reply(client: socket.socket) -> Reply:
    fds = array.array("i")
    data, ancillary, _, _ = client.recvmsg(_HEADER.size, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize))
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(blob[: len(blob) - len(blob) % fds.itemsize])
    data += _read_exactly(client, _HEADER.size - len(data))
    header = json.loads(_read_exactly(client, _length(data)))
    payload = _read_exactly(client, int(header.get("payload", 0)))
    return Reply(header, payload, list(fds))


def _read_exactly(client: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = client.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_request(conn: socket.socket) -> dict[str, Any]:
    """The request on an accepted connection (bounded); ValueError if malformed."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(MAX_REQUEST_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    body = json.loads(b"".join(chunks))
    if not isinstance(body, dict) or not isinstance(body.get("op"), str):
        raise ValueError("a request is a JSON object with an 'op'")
    return body


def send_reply(
    conn: socket.socket, header: dict[str, Any], payload: bytes = b"", fds: list[int] | None = None
) -> None:
    """Send one reply (header, payload, fds) on an accepted connection."""
    encoded = json.dumps({**header, "payload": len(payload)}).encode()
    first = _HEADER.pack(len(encoded))
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds or []).tobytes())]
    conn.sendmsg([first], ancillary if fds else [])
    conn.sendall(encoded)
    if payload:
        conn.sendall(payload)


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end (as it was when it connected)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
