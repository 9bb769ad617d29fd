"""Start an image's Jupyter kernel (ipykernel) inside the jail and connect a client to it.

    kernel = KernelProcess.start(image, policy, workdir, runtime)
    kernel.client     # a connected jupyter_client BlockingKernelClient (no heartbeat thread)
    kernel.provisioner  # where its jail runs (cogbox.kernel.provisioner): poll(), send_signal()
    kernel.stop()     # ask it to shut down, then kill and clean up its jail

The jail runs under its own monitor process (cogbox.kernel.monitor), not as a child of this
one; a kernel started with `keep` outlives this process and `KernelProcess.attach` takes it
back.

The jail's pid 1 is its init (tini, see cogbox.jail.launcher), which runs the kernel in its
own process group and forwards the signals runc passes on to it: SIGINT interrupts the
running code without ending the jail. The environment never holds `JPY_PARENT_PID`:
in a PID namespace the kernel would take its parent for dead and quit.

The host dials the kernel only through sockets it proved (`RuntimeDir.prove_sockets`), and
the kernel's own stdout/stderr go through a pipe into a capped host log (`KernelLog`, kept
by the monitor).
"""

import contextlib
import json
import queue
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from zmq.utils.monitor import recv_monitor_message

from cogbox.images.paths import JAIL_RUNTIME_DIR
from cogbox.images.store import Image
from cogbox.jail.identity import Identity, IdentityError, IdentityLease, allocate
from cogbox.jail.launcher import JailError, JailExit, JailSpec
from cogbox.jail.oci import Bind
from cogbox.jail.policy import Policy
from cogbox.kernel.connection import CONNECTION_FILE, RuntimeDir
from cogbox.kernel.errors import KernelError
from cogbox.kernel.kernel_log import read_tail
from cogbox.kernel.provisioner import KernelProvisioner, LocalProvisioner, provisioner_for

START_TIMEOUT_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 2.0
_POLL_MS = 50
_RECEIVE_HWM = 8
_LOG_TAIL_BYTES = 2000


@dataclass(frozen=True)
class KernelCommand:
    """How to start an image's kernel: the interpreter and the arguments for ipykernel."""

    python: str
    argv: list[str]
    ipykernel_version: str


def kernel_command(image: Image) -> KernelCommand:
    """The ipykernel command line for `image`, from its manifest (interpreter, packages).

    Loads the `wurlitzer` IPython extension where the image has it, so output that C or C++
    code writes straight to fd 1/2 (CNTK does) reaches the client; ipykernel 6+ captures it
    by itself. An image whose recipe names `kernel.extensions` gets those instead (the cntk
    image's `cogbox_cntk_output` wraps wurlitzer to drop CNTK's own noise lines).
    """
    python = image.info.kernel.runtime_path
    packages = {
        name.lower().replace("_", "-"): version
        for name, version in image.info.python_packages.items()
    }
    version = packages.get("ipykernel")
    if version is None:
        raise KernelError(
            f"image {image.name!r} has no ipykernel, so it cannot run sessions; add "
            "ipykernel (and its dependencies) to python.packages in its recipe"
        )
    argv = [python, "-m", "ipykernel_launcher", "-f", f"{JAIL_RUNTIME_DIR}/{CONNECTION_FILE}"]
    extensions = list(image.info.kernel.extensions)
    if not extensions and "wurlitzer" in packages and _major(version) < 6:
        extensions = ["wurlitzer"]
    # IPython takes one --ext; more go in its list option.
    if len(extensions) == 1:
        argv.append(f"--ext={extensions[0]}")
    elif extensions:
        argv.append(f"--InteractiveShellApp.extensions={json.dumps(extensions)}")
    # IPython writes each cell to its history database (in /home/work/.ipython) as it runs:
    # an SQLite commit per run on the workdir's loop device. Batched, a `print` cell costs
    # the kernel 0.92x the CPU and the machine 0.90x (benchmarks/kernel_history.py); a
    # killed kernel loses at most the last cells of its %history, never a variable or file.
    argv.append(f"--HistoryManager.db_cache_size={HISTORY_BATCH_CELLS}")
    if _major(version) < 5:
        # ipykernel 4 waits for each stdout/stderr flush with Event.wait(timeout), which
        # Python 2 implements by polling with sleeps: 5-6 ms of every run's round trip. An
        # untimed wait blocks on a lock instead; a kernel that hangs there is still caught
        # by the session's time limit and death detection.
        argv.append(f"--IPKernelApp.exec_lines={_UNTIMED_FLUSH}")
    return KernelCommand(python=python, argv=argv, ipykernel_version=version)


HISTORY_BATCH_CELLS = 20  # cells IPython keeps before it writes them to its history file
_UNTIMED_FLUSH = '["import ipykernel.iostream as _io; _io.OutStream.flush_timeout = None; del _io"]'


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


class KernelProcess:
    """One ipykernel running in a jail (behind its provisioner), and the client connected
    to it."""

    def __init__(
        self, provisioner: KernelProvisioner, client: BlockingKernelClient, runtime: RuntimeDir
    ) -> None:
        self.provisioner = provisioner
        self.client = client
        self.runtime = runtime
        self.kernel_info: dict[str, Any] = {}
        self.ready = False  # every channel proven (see _wait_ready)
        self.spooled = False  # its monitor spools IOPub (a kernel that outlives its owner)
        self._lease: IdentityLease | None = None  # a transient identity, released at stop
        self._stdin_monitor: zmq.Socket[bytes] | None = None

    @classmethod
    def start(
        cls,
        image: Image,
        policy: Policy,
        workdir: Path,
        runtime: RuntimeDir,
        *,
        env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT_SECONDS,
        identity: IdentityLease | Identity | None = None,
        binds: Sequence[Bind] = (),
        runtime_name: str = "runc",
        keep: bool = False,
        launched: Callable[[KernelProvisioner], None] | None = None,
    ) -> "KernelProcess":
        """Start the kernel and wait until it answers on every channel (`timeout` seconds).

        Raises KernelError naming why it did not start (the jail's exit reason and the end
        of the kernel's own log). `identity` is the session's host identity (its lease, so
        the kernel's monitor can hold it too); without one the kernel holds a transient one
        until `stop`. `runtime_name` is "runc" or "runsc"; `keep`: the kernel outlives this
        process under its monitor (a persisted session), which spools its IOPub. `launched`
        is told the provisioner as soon as the jail runs, before the kernel is ready.
        """
        command = kernel_command(image)
        provisioner = provisioner_for(runtime_name)
        lease = None
        if identity is None:
            try:
                lease = allocate()
            except (IdentityError, OSError) as exc:
                raise KernelError(f"cannot give the kernel a host identity: {exc}") from exc
            identity = lease
        held = identity if isinstance(identity, IdentityLease) else None
        host_identity = identity.identity if isinstance(identity, IdentityLease) else identity
        runtime.give_to(host_identity)
        if runtime_name == "runsc":
            runtime.open_to_gofer(host_identity)
        runtime.reset()
        argv = command.argv
        requested = {key: value for key, value in (env or {}).items() if key != "JPY_PARENT_PID"}
        spec = JailSpec(
            image=image,
            policy=policy,
            argv=argv,
            workdir=workdir,
            env=requested,
            binds=[Bind(runtime.path, JAIL_RUNTIME_DIR, readonly=False, noexec=True), *binds],
            name=f"kernel-{image.name}",
            identity=host_identity,
        )
        # Connect first: the stdin monitor then cannot miss the kernel's handshake, and
        # zmq keeps retrying until the dial links lead to the kernel's proven sockets.
        client = _client(runtime)
        stdin_socket = client.stdin_channel.socket
        monitor = stdin_socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        hold = [runtime.lock_fd, *([held.fileno()] if held is not None else [])]
        try:
            provisioner.launch(
                spec,
                folder=runtime.host_dir / f"monitor-{secrets.token_hex(4)}",
                log=runtime.log,
                run_dir=runtime.path,
                hold_fds=hold,
                keep=keep,
            )
            if launched is not None:
                launched(provisioner)
            kernel = cls(provisioner, client, runtime)
            kernel._lease = lease
            kernel.spooled = keep
            kernel._stdin_monitor = monitor
            kernel._wait_ready(timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                client.stop_channels()
            with contextlib.suppress(KernelError):
                provisioner.cleanup()
            if lease is not None:
                lease.release()
            _close_monitor(stdin_socket, monitor)
            if isinstance(exc, JailError):
                raise KernelError(
                    f"cannot start the kernel of image {image.name!r}: {exc}"
                ) from exc
            raise
        return kernel

    @classmethod
    def attach(cls, provisioner: KernelProvisioner, runtime: RuntimeDir) -> "KernelProcess":
        """A client of the live kernel behind `provisioner` (started by another process).

        Not waited on: the kernel may be busy with a run its previous owner left; `ensure_ready`
        once it is idle.
        """
        client = _client(runtime)
        stdin_socket = client.stdin_channel.socket
        kernel = cls(provisioner, client, runtime)
        kernel.spooled = True
        kernel._stdin_monitor = stdin_socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        runtime.prove_sockets()  # after the monitor: the stdin handshake is then seen
        return kernel

    def ensure_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until every channel answers (see `_wait_ready`), once."""
        if not self.ready:
            self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # Ready means every direction works before the first run:
        # - a kernel_info reply proves the shell socket;
        # - the busy/idle status it publishes proves our iopub subscription is live (a SUB
        #   socket misses whatever was published before it joined);
        # - a finished handshake on stdin: the kernel's ROUTER silently drops an
        #   input_request for a client it has not met yet, and input() would then wait
        #   forever;
        # - all five sockets proven and their dial links pointed (the control and hb
        #   channels are dialled later, by other clients);
        # - a spooling monitor has seen IOPub traffic too (its subscription is live).
        stdin_monitor = self._stdin_monitor
        assert stdin_monitor is not None
        deadline = time.monotonic() + timeout
        shell = self.client.shell_channel
        iopub = self.client.iopub_channel
        iopub_seen = stdin_ready = proven = False
        spool_ready = not self.spooled
        last_request = 0.0
        while not (self.kernel_info and iopub_seen and stdin_ready and proven and spool_ready):
            now = time.monotonic()
            if now > deadline:
                raise KernelError(
                    f"the kernel did not answer within {timeout:g} s; "
                    f"its log ends with: {self.log_tail() or '(nothing)'}"
                )
            ended = self.provisioner.poll()
            if ended is not None:
                raise KernelError(
                    f"the kernel exited while starting ({ended.message}): "
                    f"{self.log_tail() or 'it logged nothing'}"
                )
            proven = proven or self.runtime.prove_sockets()
            others = self.kernel_info and iopub_seen and stdin_ready and proven
            if others and not spool_ready:
                spool_ready = (
                    isinstance(self.provisioner, LocalProvisioner)
                    and self.provisioner.spool_ready()
                )
            # Again until iopub (ours, then the monitor's) has seen one go by.
            if now - last_request > (0.05 if others else 0.5):
                self.client.kernel_info()
                last_request = now
            while stdin_monitor.poll(0):
                event = recv_monitor_message(stdin_monitor)
                stdin_ready = stdin_ready or event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
            for msg in _ready_messages(shell, iopub, timeout_ms=_POLL_MS):
                if msg["msg_type"] == "kernel_info_reply":
                    self.kernel_info = dict(msg["content"])
                elif msg["msg_type"] == "status":
                    iopub_seen = True
        self.ready = True
        self._stdin_monitor = None
        _close_monitor(self.client.stdin_channel.socket, stdin_monitor)

    def poll(self) -> JailExit | None:
        """How the kernel's jail ended, or None while it runs."""
        return self.provisioner.poll()

    def interrupt(self) -> None:
        """SIGINT to the kernel (through runc and the jail's init): the running code stops."""
        self.provisioner.send_signal(signal.SIGINT)

    @property
    def workdir_view(self) -> Path | None:
        """Where the host sees the jail's /home/work right now (the live quota mount)."""
        return self.provisioner.workdir_view

    def log_tail(self) -> str:
        """The end of what the kernel process wrote to its own stdout/stderr."""
        return read_tail(self.runtime.log, _LOG_TAIL_BYTES)

    def stop(self, *, graceful: bool = True) -> JailExit | None:
        """Shut the kernel down (politely first if `graceful`), then remove its jail."""
        if graceful and self.provisioner.poll() is None:
            with contextlib.suppress(zmq.ZMQError):
                self.client.shutdown()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.provisioner.wait(SHUTDOWN_GRACE_SECONDS)
        self._close_client()
        try:
            return self.provisioner.cleanup()
        finally:
            if self._lease is not None:
                self._lease.release()

    def detach(self) -> None:
        """Let go of the kernel without stopping it (it outlives us under its monitor)."""
        self._close_client()
        if isinstance(self.provisioner, LocalProvisioner):
            self.provisioner.detach()

    def _close_client(self) -> None:
        if self._stdin_monitor is not None:
            _close_monitor(self.client.stdin_channel.socket, self._stdin_monitor)
            self._stdin_monitor = None
        with contextlib.suppress(Exception):
            self.client.stop_channels()


def _client(runtime: RuntimeDir) -> BlockingKernelClient:
    client = BlockingKernelClient()
    # Messages no run reads (output of a Jupyter client's cells) wait in this host
    # process, counted in messages of any size: keep few; the kernel's side holds the rest.
    client.context.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
    client.load_connection_info(runtime.connection_info())
    client.start_channels(hb=False)
    return client


def _close_monitor(socket: zmq.Socket[bytes], monitor: zmq.Socket[bytes]) -> None:
    with contextlib.suppress(zmq.ZMQError):
        socket.disable_monitor()
    monitor.close(linger=0)


def _ready_messages(*channels: Any, timeout_ms: int = 0) -> list[dict[str, Any]]:
    poller = zmq.Poller()
    for channel in channels:
        poller.register(channel.socket, zmq.POLLIN)
    ready = dict(poller.poll(timeout_ms))
    messages = []
    for channel in channels:
        if channel.socket in ready:
            with contextlib.suppress(queue.Empty):
                messages.append(channel.get_msg(timeout=0))
    return messages
