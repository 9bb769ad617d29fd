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
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import zmq
from jupyter_client.session import Session as Signer

from cogbox.kernel.connection import channel_endpoint
from cogbox.kernel.messages import DELIMITER, has_input

CHANNELS = ("shell", "control", "stdin", "iopub")
CLIENT_CHANNELS = ("shell", "control", "stdin")  # iopub and hb are not a client's to send on
RECONNECT_MS = 100  # a restarted kernel's new sockets are found this fast
BATCH = 64  # most messages taken at once before the other side gets a turn
BATCH_BYTES = 1 << 20  # ... or this many bytes of them: a batch is held in memory whole
# Kernel messages waiting in each relay socket, counted in messages (a kernel can send 1 MB
# ones): the relay reads them at once, so a few suffice; past them the kernel's side waits.
RECEIVE_HWM = 8
PROTOCOL_VERSION = "5.3"
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


def new_message(
    channel: str, kind: str, content: dict[str, Any], session: str = ""
) -> tuple[str, RelayMessage]:
    """(its msg_id, the unsigned message) of a new request of type `kind` from `session`."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": kind,
        "username": "cogbox",
        "session": session,
        "date": datetime.now(UTC).isoformat(),
        "version": PROTOCOL_VERSION,
    }
    parts = [json.dumps(header).encode(), b"{}", b"{}", json.dumps(content).encode()]
    return msg_id, RelayMessage(channel, parts)


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
    """One client's own sockets on a kernel, in the process that owns the kernel.

    Read on the running asyncio loop without pyzmq's asyncio poller (a future, a timer and
    four reader registrations per wait, a third of the agent's time per run): each socket's
    notification fd is registered once, and the loop's callback only notes that a socket
    has messages; `receive` takes them (at most a batch: what is not taken waits in the
    socket, so a slow reader holds the kernel back instead of growing this process)."""

    def __init__(self, context: zmq.Context[Any], info: dict[str, Any], identity: str = "") -> None:
        self.signer = signer_of(info)
        # shell and stdin's, where the kernel sends a request's replies and input requests
        self.identity = identity or secrets.token_hex(8)
        kinds = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER, "iopub": zmq.SUB}
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        for channel, kind in kinds.items():
            sock: zmq.Socket[bytes] = zmq.Socket(context, kind)
            sock.linger = 0
            sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)  # set before connect: it then applies
            sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
            if channel in ("shell", "stdin"):
                sock.setsockopt(zmq.IDENTITY, self.identity.encode())
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(channel_endpoint(info, channel))
            self._sockets[channel] = sock
        self._channel_of = {sock: name for name, sock in self._sockets.items()}
        # Sockets seen with messages waiting: only these are read (asking a socket costs
        # a call into libzmq, and most waits end with one message on one socket).
        self._ready: dict[zmq.Socket[bytes], None] = {}
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        for sock in self._sockets.values():
            self._loop.add_reader(sock.FD, self._wake, sock)
        self._nudges: set[bytes] = set()
        self.hears: object | None = None  # the owner's note of which kernel a nudge proved
        self._closed = False

    def _wake(self, sock: zmq.Socket[bytes]) -> None:
        # The fd is edge-triggered: reading EVENTS re-arms it (and stops the loop calling).
        if has_input(sock):
            self._ready[sock] = None
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _settle, self._waiter)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def nudge(self, timeout: float) -> bool:
        """Wait until both ways work: a SUB socket misses what is published before its
        subscription arrives, and a DEALER's request can go to a restarted kernel's old,
        dead pipe. So kernel_info is asked until its reply comes back on shell and its
        status on iopub (what else arrives meanwhile predates the client and is dropped;
        the replies to these requests never reach it). Whether that came within `timeout`."""
        deadline = time.monotonic() + timeout
        replied = heard = False
        while time.monotonic() < deadline:
            request = self.signer.msg("kernel_info_request")
            self._nudges.add(request["header"]["msg_id"].encode())
            await self._send_frames("shell", self.signer.serialize(request))
            asked = time.monotonic()
            while time.monotonic() - asked < 0.5:
                for message in self._take(nudges=True):
                    if self._is_nudge(message.parts[1]):
                        replied = replied or message.channel == "shell"
                        heard = heard or message.channel == "iopub"
                if replied and heard:
                    return True
                await self._wait(0.05)
        return False

    async def send(self, message: RelayMessage) -> None:
        if message.channel not in CLIENT_CHANNELS or len(message.parts) != 4:
            raise RelayError(f"a client message on {message.channel!r}")
        await self._send_frames(
            message.channel, [*sign(self.signer, message.parts), *message.buffers]
        )

    async def _send_frames(self, channel: str, frames: list[bytes]) -> None:
        sock = self._sockets[channel]
        while True:
            try:
                sock.send_multipart(frames, _NOBLOCK)
                break
            except zmq.Again:  # the kernel's queue is full: it reads again soon
                await asyncio.sleep(RECONNECT_MS / 1000)
        # A send may take the fd's edge along with it: look for messages on the next wait.
        self._wake(sock)

    async def receive(self, timeout: float) -> list[RelayMessage]:
        if not self._ready and not self._closed:
            await self._wait(timeout)
        else:  # a kernel that floods must still let the loop's other work run
            await asyncio.sleep(0)
        return self._take()

    def _take(self, *, nudges: bool = False) -> list[RelayMessage]:
        messages: list[RelayMessage] = []
        taken = 0
        for sock in list(self._ready):
            channel = self._channel_of[sock]
            for _ in range(BATCH):
                if taken >= BATCH_BYTES:
                    break
                try:
                    frames = sock.recv_multipart(_NOBLOCK)
                except zmq.Again:
                    del self._ready[sock]
                    self._wake(sock)  # re-armed, and back if a message came meanwhile
                    break
                taken += sum(map(len, frames))
                try:
                    _, parts, buffers = check(self.signer, frames)
                except RelayError as exc:
                    log.warning("dropped a kernel message: %s", exc)
                    continue
                if not nudges and self._nudges and self._is_nudge(parts[1]):
                    continue
                messages.append(RelayMessage(channel, parts, buffers))
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
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets.values():
            self._loop.remove_reader(sock.FD)
            sock.close(linger=0)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        await asyncio.sleep(0)


_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: no enum arithmetic


def _settle(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)
