"""The stdin of a run's first owner, taken over by the process that re-attached.

ipykernel sends a run's `input_request` to the identity of the client that sent the run
(jupyter_client names its sockets by the Jupyter session id). After that owner died, a
re-attached client (another id) would never hear the run ask. A socket of the same identity,
connected where the owner's was, does: the kernel's ROUTER forgot the dead peer and routes
to the new one. The kernel takes an `input_reply` from any client, so answers go here too.
"""

import contextlib

import zmq
from jupyter_client.session import Session as JupyterSession

from cogbox.kernel.events import InputRequest


class OwnerStdin:
    """A DEALER on the kernel's stdin endpoint with the run's first owner's identity."""

    def __init__(self, endpoint: str, key: str, owner: str) -> None:
        self._codec = JupyterSession(key=key.encode(), signature_scheme="hmac-sha256")
        self._socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IDENTITY, owner.encode("ascii"))
        self._socket.connect(endpoint)

    def asked(self, msg_id: str) -> list[InputRequest]:
        """The input requests of the run `msg_id` that arrived since the last call."""
        asked: list[InputRequest] = []
        while self._socket.poll(0, zmq.POLLIN):
            frames = self._socket.recv_multipart()
            try:
                _, parts = self._codec.feed_identities(frames, copy=True)
                msg = self._codec.deserialize(parts, content=True, copy=True)
            except (ValueError, TypeError, KeyError):
                continue  # not signed with the session's key
            if msg["msg_type"] == "input_request" and msg["parent_header"].get("msg_id") == msg_id:
                content = msg["content"]
                asked.append(
                    InputRequest(str(content.get("prompt", "")), bool(content.get("password")))
                )
        return asked

    def answer(self, text: str) -> None:
        self._codec.send(self._socket, "input_reply", {"value": text})

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.close(linger=0)
