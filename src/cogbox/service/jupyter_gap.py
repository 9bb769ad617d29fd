"""What a Jupyter channels relay owes its client across a gap (its agent restarted).

The kernel answers a shell or control request on the socket it came from. A request sent
through the old agent's relay is answered to a socket that is gone with it, so its reply
is lost, and so is what the kernel published on iopub while no relay was subscribed.
`ReplyLedger` keeps every request still owed a reply; after the gap it sends the kernel
one request of its own per channel (a barrier: the kernel answers requests in order, so
once it answers that one, every older request has ended), then gives the client, for
each request whose reply was lost, an error reply that says so and the iopub `idle` the
client waits on (unless the real one came). A notice on stderr says output may be lost.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.session import Session as Messages

_MESSAGES = Messages(key=b"")  # the surface's own messages (clients check no key)
_REPLIED = ("shell", "control")
# After the shell barrier's reply, how long its iopub `idle` may lag before the lost
# requests are settled anyway (iopub and shell are separate sockets).
IDLE_LAG_SECONDS = 1.0
LOST_REPLY = "ReplyLostInAgentRestart"


@dataclass
class _Owed:
    channel: str
    header: dict[str, Any]
    execution_count: int | None = None
    idle_seen: bool = False


@dataclass
class _Barrier:
    msg_id: str
    replied_at: float | None = None
    idle_seen: bool = False


@dataclass
class ReplyLedger:
    """The client's requests still owed a reply, and those the gap lost."""

    outstanding: dict[str, _Owed] = field(default_factory=dict)
    lost: dict[str, _Owed] = field(default_factory=dict)
    barriers: dict[str, _Barrier] = field(default_factory=dict)  # channel -> its barrier

    def sent(self, channel: str, msg: dict[str, Any]) -> None:
        """The client's `msg` goes to the kernel on `channel`."""
        header = msg.get("header", {})
        msg_id, kind = header.get("msg_id"), str(header.get("msg_type", ""))
        # Only requests are answered (comm messages on shell are not).
        if channel in _REPLIED and isinstance(msg_id, str) and kind.endswith("_request"):
            self.outstanding[msg_id] = _Owed(channel, dict(msg["header"]))

    def unsent(self, msg: dict[str, Any]) -> None:
        """`msg` did not leave (the relay broke first): it will be sent again."""
        self.outstanding.pop(msg.get("header", {}).get("msg_id"), None)

    def received(self, msg: dict[str, Any], now: float | None = None) -> bool:
        """Note a kernel's message; False when it answers the ledger's own barrier (the
        client never sees those)."""
        parent = msg["parent_header"].get("msg_id")
        channel, kind = msg["channel"], msg["msg_type"]
        content = msg["content"] if isinstance(msg["content"], dict) else {}
        idle = kind == "status" and content.get("execution_state") == "idle"
        for barrier_channel, barrier in self.barriers.items():
            if parent == barrier.msg_id:
                if channel == barrier_channel:
                    barrier.replied_at = time.monotonic() if now is None else now
                elif idle:
                    barrier.idle_seen = True
                return False
        if channel in _REPLIED:
            self.outstanding.pop(parent, None)
            self.lost.pop(parent, None)  # a reply that made it after all
        elif (owed := self.outstanding.get(parent) or self.lost.get(parent)) is not None:
            owed.idle_seen = owed.idle_seen or idle  # the client has had it: none again
            if kind == "execute_input":
                owed.execution_count = content.get("execution_count")
        return True

    def gap(self) -> list[tuple[str, dict[str, Any]]]:
        """The relay broke: what is owed now is lost. The barriers to send on the next
        relay, one per channel with a lost request (before any of the client's)."""
        self.lost.update(self.outstanding)
        self.outstanding.clear()
        self.barriers.clear()
        requests: list[tuple[str, dict[str, Any]]] = []
        for channel in sorted({owed.channel for owed in self.lost.values()}):
            barrier = _MESSAGES.msg("kernel_info_request", {})
            self.barriers[channel] = _Barrier(barrier["header"]["msg_id"])
            requests.append((channel, barrier))
        return requests

    def notice(self, busy: bool) -> dict[str, Any] | None:
        """The stderr note for the client after a gap (None when nothing was going on)."""
        if not self.lost and not busy:
            return None
        executes = [o for o in self.lost.values() if o.header.get("msg_type") == "execute_request"]
        parent = executes[-1].header if executes else {}
        lost = len(self.lost)
        replies = f"; {lost} {'reply was' if lost == 1 else 'replies were'} lost" if lost else ""
        text = (
            "[cogbox: the kernel's agent restarted; the kernel and its variables are kept, "
            f"but output it sent meanwhile may be lost{replies}]\n"
        )
        msg = _MESSAGES.msg("stream", {"name": "stderr", "text": text}, parent=parent)
        msg["channel"] = "iopub"
        return msg

    def settled(self, now: float | None = None) -> list[dict[str, Any]]:
        """For each lost request whose channel's barrier was answered: its error reply and
        (unless the real one came) its iopub `idle`. Each is given once."""
        now = time.monotonic() if now is None else now
        out: list[dict[str, Any]] = []
        for channel, barrier in list(self.barriers.items()):
            if barrier.replied_at is None:
                continue
            lagging = now - barrier.replied_at < IDLE_LAG_SECONDS
            if channel == "shell" and not barrier.idle_seen and lagging:
                continue
            del self.barriers[channel]
            for msg_id, owed in list(self.lost.items()):
                if owed.channel == channel:
                    del self.lost[msg_id]
                    out.extend(_lost_reply(owed))
        return out


def _lost_reply(owed: _Owed) -> list[dict[str, Any]]:
    kind = str(owed.header.get("msg_type", "request"))
    evalue = (
        f"the kernel's reply to this {kind} was lost: the agent that relayed it restarted "
        "before the reply came back (the kernel has finished with it; what it printed after "
        "the restart was relayed, what it printed during the restart may be lost)"
    )
    content: dict[str, Any] = {
        "status": "error",
        "ename": LOST_REPLY,
        "evalue": evalue,
        "traceback": [f"{LOST_REPLY}: {evalue}"],
    }
    if kind == "execute_request":
        content["execution_count"] = owed.execution_count
    reply_kind = kind.removesuffix("_request") + "_reply"
    reply = _MESSAGES.msg(reply_kind, content, parent=owed.header)
    reply["channel"] = owed.channel
    messages = [reply]
    if not owed.idle_seen:
        idle = _MESSAGES.msg("status", {"execution_state": "idle"}, parent=owed.header)
        idle["channel"] = "iopub"
        messages.append(idle)
    return messages
