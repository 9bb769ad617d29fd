"""The agent process (`cogbox agent`), and how `cogbox serve` finds or starts it.

One agent per node folder: it holds `agent.lock` (flock) for its whole life, so a manager
tells a live agent from a dead one's leftovers without trusting a pid file. `cogbox serve`
starts it detached (its own session, not a child that dies with the manager's process
group), so a `kill -9` of the manager leaves the agent and its kernels running, and the next
`cogbox serve` on the same folder connects to it instead of starting a second.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from aiohttp import web

from cogbox import event_loop
from cogbox.agent import tls
from cogbox.agent.channel import AgentPlace
from cogbox.agent.errors import ChannelError
from cogbox.agent.local import LocalAgent
from cogbox.agent.server import AgentServer

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0
_MAX_SPAWNS = 3  # an agent that dies at its start each time: its log says why


def lock_file(place: AgentPlace) -> Path:
    return place.folder / "agent.lock"


@contextlib.contextmanager
def holding_lock(place: AgentPlace) -> Iterator[int]:
    """The node folder's agent lock, held (ChannelError if another agent holds it)."""
    fd = os.open(lock_file(place), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ChannelError(f"an agent already runs for {place.folder}") from exc
        yield fd
    finally:
        os.close(fd)


def agent_alive(place: AgentPlace) -> bool:
    """Whether an agent holds the folder's lock now."""
    if not lock_file(place).exists():
        return False
    try:
        with holding_lock(place):
            return False
    except ChannelError:
        return True


def accepting(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def ensure_agent(
    place: AgentPlace,
    *,
    sessions_dir: Path,
    logs_dir: Path,
    vfolders_dir: Path,
    pools: Mapping[str, int],
) -> bool:
    """Make sure the node's agent runs and accepts connections; True if it was started now,
    False if a live one was found (whose kernels the manager re-attaches)."""
    place.make()
    place.key()
    command = [
        sys.executable,
        "-m",
        "cogbox.cli",
        "agent",
        "--dir",
        str(place.folder),
        "--sessions-dir",
        str(sessions_dir),
        "--logs-dir",
        str(logs_dir),
        "--vfolders-dir",
        str(vfolders_dir),
        *[arg for image, size in pools.items() for arg in ("--pool", f"{image}={size}")],
    ]
    spawned: subprocess.Popen[bytes] | None = None
    spawns = 0
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if agent_alive(place):
            if accepting(place.socket):
                return spawned is not None
        elif spawns < _MAX_SPAWNS and (spawned is None or spawned.poll() is not None):
            # Nobody holds the lock, and no agent of ours is on its way: start one. Asked
            # again in the loop, not once: an agent killed a moment ago can still hold its
            # lock when the manager sees its channel break, and lets go of it just after.
            with open(place.log_file, "ab") as out:
                spawned = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # not in the manager's process group: outlives it
                    close_fds=True,
                )
            spawns += 1
        time.sleep(0.05)
    raise ChannelError(f"the agent did not start; see {place.log_file}")


def run_agent(
    place: AgentPlace,
    *,
    sessions_dir: Path,
    logs_dir: Path,
    vfolders_dir: Path,
    pools: Mapping[str, int],
    listen: tuple[str, int] | None = None,
) -> None:
    """Serve this node's kernels until SIGTERM/SIGINT or a manager's `shutdown`: on the
    folder's unix socket, or with `listen` (host, port) on TCP with TLS (tls.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    place.make()
    key = place.key()
    with holding_lock(place):
        event_loop.run(_serve(place, key, sessions_dir, logs_dir, vfolders_dir, pools, listen))


async def open_channel(
    server: AgentServer, place: AgentPlace, listen: tuple[str, int] | None
) -> tuple[web.AppRunner, str]:
    """Serve `server` on the folder's socket or, with `listen`, on TCP with TLS (its address
    published in the folder); returns the runner and where, for the log."""
    if listen is None:
        return await server.serve_unix(place.socket), str(place.socket)
    fingerprint = await asyncio.to_thread(tls.certificate, place)
    runner, port = await server.serve_tls(*listen, tls.server_context(place))
    address = tls.publish(place, listen[0], port, fingerprint)
    return runner, f"tls {listen[0]}:{port} (published as {address.url}, sha256 {fingerprint})"


async def _serve(
    place: AgentPlace,
    key: bytes,
    sessions_dir: Path,
    logs_dir: Path,
    vfolders_dir: Path,
    pools: Mapping[str, int],
    listen: tuple[str, int] | None,
) -> None:
    sessions_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    agent = LocalAgent(
        pools=pools,
        workdirs=sessions_dir,
        logs_dir=logs_dir,
        states_dir=place.folder / "kernels",
        folders=vfolders_dir,
    )
    await agent.open()
    server = AgentServer(agent, key)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stopped.set)
    runner, where = await open_channel(server, place, listen)
    place.pid_file.write_text(f"{os.getpid()}\n")
    log.info("cogbox agent %d serving %s", os.getpid(), where)
    try:
        await server.stopped.wait()
    finally:
        for path in (place.socket, place.address_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        await runner.cleanup()
        await agent.close()
        with contextlib.suppress(FileNotFoundError):
            place.pid_file.unlink()
        log.info("cogbox agent %d stopped", os.getpid())
