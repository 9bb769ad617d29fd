"""The one relay to a kernel's sockets, and the one place that signs and checks its messages.

A client of a kernel (a Jupyter WebSocket of the manager, through the agent) gets its own
sockets on the kernel (`KernelChannels`: a DEALER identity of its own on shell/stdin, which
share it because the kernel sends `input_request` to the sender of the `execute_request`, a
DEALER on control, a SUB on iopub). What goes in is signed with the kernel's key here, what
comes out is checked against it here, so the key stays with the kernel's owner (the agent):
the manager and its clients never hold it. A message crosses as a `RelayMessage`, its four
JSON parts kept as the bytes they are (a 1 MB output is never parsed on the way).

`cogbox.kernel.proxy` (Jupyter's own sockets relayed to a jailed kernel) re-signs with the
same `check` and `sign`.
"""

import asyncio
import hmac
import json
import logging
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq
import zmq.asyncio
from jupyter_client.session import Session as Signer

from cogbox.kernel.connection import channel_endpoint

DELIMITER = b"<IDS|MSG>"
CHANNELS = ("shell", "control", "stdin", "iopub")
CLIENT_CHANNELS = ("shell", "control", "stdin")  # iopub and hb are not a client's to send on
RECONNECT_MS = 100  # a restarted kernel's new sockets are found this fast
BATCH = 64  # most messages taken at once before the other side gets a turn
BATCH_BYTES = 1 << 20  # ... or this many bytes of them: a batch is held in memory whole
# Kernel messages waiting in each relay socket, counted in messages (a kernel can send 1 MB
# ones): the relay reads them at once, so a few suffice; past them the kernel's side waits.
RECEIVE_HWM = 8
MAX_PARTS = 64  # a message's four parts and its buffers
log = logging.getLogger(__name__)


class RelayError(ValueError):
    """A relay frame that is not one: wrong counts, offsets or channel."""


@dataclass
class RelayMessage:
    """One Jupyter message between a client and a kernel: its channel, its four JSON parts
    (header, parent header, metadata, content) as bytes, and its binary buffers."""

    channel: str
    parts: list[bytes]
    buffers: list[bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(map(len, self.parts)) + sum(map(len, self.buffers))


def pack(message: RelayMessage) -> bytes:
    """One binary frame: count, offsets (big-endian uint32), channel, parts, buffers."""
    pieces = [message.channel.encode(), *message.parts, *message.buffers]
    offsets = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack(f"!{len(pieces) + 1}I", len(pieces), *offsets) + b"".join(pieces)


def unpack(data: bytes) -> RelayMessage:
    """The inverse of `pack`; RelayError for anything else."""
    try:
        (count,) = struct.unpack("!I", data[:4])
        if not 5 <= count <= MAX_PARTS:
            raise RelayError(f"a relay frame of {count} parts")
        offsets = list(struct.unpack(f"!{count}I", data[4 : 4 * (count + 1)]))
    except struct.error as exc:
        raise RelayError(f"a relay frame without its offsets: {exc}") from exc
    offsets.append(len(data))
    if offsets[0] != 4 * (count + 1) or offsets != sorted(offsets):
        raise RelayError("a relay frame whose offsets are out of order")
    pieces = [data[offsets[i] : offsets[i + 1]] for i in range(count)]
    channel = pieces[0].decode("ascii", "replace")
    if channel not in CHANNELS:
        raise RelayError(f"a relay frame on no channel ({channel[:20]!r})")
    return RelayMessage(channel, pieces[1:5], pieces[5:])


def signer_of(info: dict[str, Any]) -> Signer:
    return Signer(
        key=str(info.get("key", "")).encode(),
        signature_scheme=str(info.get("signature_scheme") or "hmac-sha256"),
    )


def sign(signer: Signer, parts: list[bytes]) -> list[bytes]:
    """The frames (after any identities) that carry `parts`, signed by `signer`."""
    return [DELIMITER, signer.sign(parts), *parts]


def check(signer: Signer, frames: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(identities, the four parts, buffers) of a message that `signer` signed; RelayError
    if it has no delimiter, fewer parts, or a signature that does not verify."""
    try:
        split = frames.index(DELIMITER)
    except ValueError as exc:
        raise RelayError("a message without Jupyter's delimiter") from exc
    parts = frames[split + 2 : split + 6]
    if len(parts) < 4 or len(frames) < split + 2:
        raise RelayError("a message with fewer than four parts")
    if signer.auth is not None and not hmac.compare_digest(frames[split + 1], signer.sign(parts)):
        raise RelayError("a message whose signature does not verify")
    return frames[:split], parts, frames[split + 6 :]


class KernelRelay(Protocol):
    """A client's relay to one kernel, wherever the kernel runs (in this process, or behind
    the agent channel)."""

    async def send(self, message: RelayMessage) -> None:
        """Sign `message` and send it to the kernel (client channels only)."""

    async def receive(self, timeout: float) -> list[RelayMessage]:
        """The kernel's next messages (a bounded batch, checked), or [] after `timeout`."""
        ...

    async def close(self) -> None: ...


class KernelChannels:
    """One client's own sockets on a kernel, in the process that owns the kernel."""

    def __init__(self, context: zmq.asyncio.Context, info: dict[str, Any]) -> None:
        self.signer = signer_of(info)
        identity = secrets.token_hex(8).encode()
        kinds = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER, "iopub": zmq.SUB}
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        for channel, kind in kinds.items():
            sock = context.socket(kind)
            sock.linger = 0
            sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)  # set before connect: it then applies
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
            if channel in ("shell", "stdin"):
                sock.setsockopt(zmq.IDENTITY, identity)
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(channel_endpoint(info, channel))
            self._sockets[channel] = sock
        self._channel_of = {sock: name for name, sock in self._sockets.items()}
        self._poller = zmq.asyncio.Poller()
        for sock in self._sockets.values():
            self._poller.register(sock, zmq.POLLIN)
        self._nudges: set[bytes] = set()

    async def nudge(self, timeout: float) -> None:
        """Wait until iopub receives (a SUB socket misses what is published before its
        subscription arrives), by asking kernel_info until a status message comes back;
        the replies to these requests are not the client's and never reach it."""
        iopub = self._sockets["iopub"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            request = self.signer.msg("kernel_info_request")
            self._nudges.add(request["header"]["msg_id"].encode())
            await self._sockets["shell"].send_multipart(self.signer.serialize(request))
            if await iopub.poll(500):
                break

    async def send(self, message: RelayMessage) -> None:
        if message.channel not in CLIENT_CHANNELS or len(message.parts) != 4:
            raise RelayError(f"a client message on {message.channel!r}")
        frames = [*sign(self.signer, message.parts), *message.buffers]
        await self._sockets[message.channel].send_multipart(frames)

    async def receive(self, timeout: float) -> list[RelayMessage]:
        messages: list[RelayMessage] = []
        taken = 0
        for sock, _ in await self._poller.poll(timeout * 1000):
            for _ in range(BATCH):
                if taken >= BATCH_BYTES or not int(sock.get(zmq.EVENTS)) & zmq.POLLIN:
                    break
                frames = await sock.recv_multipart()
                taken += sum(map(len, frames))
                try:
                    _, parts, buffers = check(self.signer, frames)
                except RelayError as exc:
                    log.warning("dropped a kernel message: %s", exc)
                    continue
                if self._nudges and self._is_nudge(parts[1]):
                    continue
                messages.append(RelayMessage(self._channel_of[sock], parts, buffers))
        return messages

    def _is_nudge(self, parent: bytes) -> bool:
        if not any(msg_id in parent for msg_id in self._nudges):
            return False
        try:
            msg_id = json.loads(parent).get("msg_id", "")
        except (ValueError, AttributeError):
            return False
        return isinstance(msg_id, str) and msg_id.encode() in self._nudges

    async def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(linger=0)
        await asyncio.sleep(0)
