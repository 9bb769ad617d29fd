"""A Jupyter kernel that is a jailed kernel: relays Jupyter's sockets to an image's ipykernel.

Jupyter starts it from a cogbox kernelspec (see `cogbox kernelspec install`):

    python -m cogbox.kernel.proxy --image cntk -f /path/to/kernel-1234.json

The proxy binds the TCP sockets named in Jupyter's connection file, starts the image's
kernel in a jail (reached over ipc:// sockets, see `cogbox.kernel.connection`) and relays
every message between the two, so notebooks, consoles, nbclient and papermill use a
jailed kernel exactly like a local one. Each side has its own signing key: a message from
Jupyter is checked against Jupyter's key and signed again with the kernel's, and back, so
a message that fails its signature is dropped and the jailed code never learns the key of
Jupyter's sockets. Checking and signing are `cogbox.kernel.relay`'s, the one relay code that
does either (the manager's Jupyter surface reaches kernels through it too, in the agent).

Routing needs no bookkeeping: the proxy's DEALER sockets pass the frontend's identity
frames through, the kernel returns them on its replies, and the proxy's ROUTER sockets use
them to reach the right frontend (ZMQ's broker pattern). The shell and stdin DEALERs share
one identity, because the kernel addresses `input_request`s to the shell request's sender.

Signals: SIGINT (how Jupyter interrupts a kernel whose spec says `interrupt_mode: signal`)
interrupts the jailed kernel; SIGTERM ends the proxy and removes the jail. When the jailed
kernel ends (a shutdown request, out of memory, a crash) the proxy exits too, and Jupyter
sees a kernel that died, as with any other kernel. A SIGKILL of the proxy leaves the jail
to the launcher's own limits (wall time): it cannot be caught.
"""

import argparse
import contextlib
import json
import logging
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from cogbox.errors import CogboxError
from cogbox.jail.policy import load_policy
from cogbox.kernel.connection import RuntimeDir, channel_endpoint
from cogbox.kernel.launch import KernelProcess
from cogbox.kernel.relay import RelayError, check, sign, signer_of
from cogbox.kernel.session import new_workdir, resolve_image

_POLL_MS = 200  # how often the jail is checked while no message arrives
_RECONNECT_MS = 10
_log = logging.getLogger("cogbox.kernel.proxy")


@dataclass
class _Route:
    """One channel: the socket Jupyter talks to and the one the jailed kernel talks to."""

    name: str
    front: zmq.Socket[bytes]
    back: zmq.Socket[bytes]
    signed: bool = True  # heartbeats are raw bytes, not Jupyter messages


class KernelProxy:
    """Jupyter's sockets (from its connection file) relayed to one jailed kernel."""

    def __init__(self, connection: dict[str, Any], kernel: KernelProcess) -> None:
        self.kernel = kernel
        self._context = zmq.Context()
        back_info = kernel.runtime.connection_info()
        self._signers = {"front": signer_of(connection), "back": signer_of(dict(back_info))}
        identity = secrets.token_hex(8).encode()
        front = _endpoints(connection)
        back = _endpoints(dict(back_info))
        self.routes = [
            self._route("shell", zmq.ROUTER, zmq.DEALER, front, back, identity),
            self._route("control", zmq.ROUTER, zmq.DEALER, front, back, None),
            self._route("stdin", zmq.ROUTER, zmq.DEALER, front, back, identity),
            self._route("iopub", zmq.PUB, zmq.SUB, front, back, None),
            self._route("hb", zmq.ROUTER, zmq.DEALER, front, back, None, signed=False),
        ]
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._interrupts = 0
        self._stop = False

    def _route(
        self,
        name: str,
        front_type: int,
        back_type: int,
        front: dict[str, str],
        back: dict[str, str],
        identity: bytes | None,
        *,
        signed: bool = True,
    ) -> _Route:
        front_socket: zmq.Socket[bytes] = self._context.socket(front_type)
        front_socket.linger = 0
        front_socket.bind(front[name])
        back_socket: zmq.Socket[bytes] = self._context.socket(back_type)
        back_socket.linger = 0
        back_socket.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_MS)
        if identity is not None:
            back_socket.setsockopt(zmq.IDENTITY, identity)
        if back_type == zmq.SUB:
            back_socket.setsockopt(zmq.SUBSCRIBE, b"")
        back_socket.connect(back[name])
        return _Route(name, front_socket, back_socket, signed)

    def serve(self) -> int:
        """Relay until the jailed kernel ends or SIGTERM; returns the exit status to use."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        old_wakeup = signal.set_wakeup_fd(self._wake_write.fileno())
        poller = zmq.Poller()
        sides: dict[Any, tuple[_Route, str]] = {}
        for route in self.routes:
            poller.register(route.front, zmq.POLLIN)
            poller.register(route.back, zmq.POLLIN)
            sides[route.front] = (route, "front")
            sides[route.back] = (route, "back")
        wake = self._wake_read.fileno()
        poller.register(wake, zmq.POLLIN)
        try:
            while not self._stop:
                ended = self.kernel.poll()
                if ended is not None:
                    self._drain(sides)
                    _log.info("the jailed kernel ended: %s", ended.message)
                    return 0 if ended.returncode == 0 else 1
                for sock, _ in poller.poll(_POLL_MS):
                    if sock == wake:
                        with contextlib.suppress(OSError):
                            self._wake_read.recv(64)
                        continue
                    route, side = sides[sock]
                    self._relay(route, side)
                while self._interrupts:
                    self._interrupts -= 1
                    self.kernel.interrupt()
            return 0
        finally:
            signal.set_wakeup_fd(old_wakeup)
            _ignore_signals()  # cleaning up must not be cut short

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
        else:
            self._stop = True

    def _relay(self, route: _Route, side: str) -> None:
        source, target = (route.front, route.back) if side == "front" else (route.back, route.front)
        for _ in range(64):  # bounded: every socket gets its turn
            try:
                frames = source.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if route.signed:
                resigned = self._resign(frames, side)
                if resigned is None:
                    _log.warning("dropped a %s message with a bad signature", route.name)
                    continue
                frames = resigned
            target.send_multipart(frames)

    def _resign(self, frames: list[bytes], side: str) -> list[bytes] | None:
        try:
            identities, parts, buffers = check(self._signers[side], frames)
        except RelayError:
            return None
        other = self._signers["back" if side == "front" else "front"]
        return [*identities, *sign(other, parts), *buffers]

    def _drain(self, sides: dict[Any, tuple[_Route, str]]) -> None:
        # The kernel's last words (a shutdown_reply, its final status) still reach Jupyter.
        for route, side in sides.values():
            if side == "back":
                self._relay(route, side)

    def close(self) -> None:
        for route in self.routes:
            route.front.close(linger=200)
            route.back.close(linger=0)
        self._wake_read.close()
        self._wake_write.close()
        self._context.term()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _endpoints(info: dict[str, Any]) -> dict[str, str]:
    return {
        name: channel_endpoint(info, name) for name in ("shell", "control", "stdin", "iopub", "hb")
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m cogbox.kernel.proxy`."""
    parser = argparse.ArgumentParser(
        prog="python -m cogbox.kernel.proxy",
        description="A Jupyter kernel that runs an image's kernel in a cogbox jail.",
    )
    parser.add_argument("--image", required=True, help="the cogbox image to run")
    parser.add_argument("-f", dest="connection_file", required=True, type=Path)
    parser.add_argument("--policy", type=Path, help="a policy.yml instead of the image's own")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="host folder shown at /home/work (default: a fresh one, deleted at the end)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[cogbox proxy] %(message)s")
    try:
        connection = json.loads(args.connection_file.read_text())
        policy = load_policy(args.policy) if args.policy is not None else None
        image, policy = resolve_image(args.image, policy)
    except (OSError, ValueError, CogboxError) as exc:
        _log.error("cannot start: %s", exc)
        return 2
    workdir = args.workdir
    owned = workdir is None
    if workdir is None:
        workdir = new_workdir(secrets.token_hex(8))
    # Until the relay runs, an interrupt has nothing to stop; Jupyter's SIGTERM (or a
    # closed terminal) during the start still removes the jail.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    runtime = RuntimeDir.create()
    kernel: KernelProcess | None = None
    proxy: KernelProxy | None = None
    try:
        kernel = KernelProcess.start(image, policy, workdir, runtime)
        kernel.client.stop_channels()  # the proxy's own sockets take over from here
        proxy = KernelProxy(connection, kernel)
        return proxy.serve()
    except CogboxError as exc:
        _log.error("%s", exc)
        return 1
    finally:
        _ignore_signals()
        if proxy is not None:
            proxy.close()
        if kernel is not None:
            with contextlib.suppress(CogboxError):
                kernel.stop(graceful=False)
        runtime.remove()
        if owned:
            shutil.rmtree(workdir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
