"""Where and how a kernel's jail runs: the seam below `KernelProcess`.

Shaped like jupyter_client's `KernelProvisionerBase`: `launch`, `poll`, `wait`,
`send_signal`, `kill`, `cleanup`, and `info()` (JSON, persisted by a session) with its
`attach(info)` classmethod (jupyter_client's get/load_provisioner_info), which a restarted
owner uses to take the kernel back. `LocalProvisioner` runs the jail on this host under its
own monitor process (cogbox.kernel.monitor) with runtime "runc" or "runsc" (gVisor); a
Slurm provisioner is meant to go behind the same seam.

The local provisioner learns of the jail's end without asking: it holds a pidfd of the
jail's init, and asks the monitor for the `JailExit` only once that fired.
"""

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cogbox.jail.cgroups import CgroupError, JailCgroup
from cogbox.jail.exit_reason import ExitReason, JailExit
from cogbox.jail.launcher import JailSpec
from cogbox.jail.reaper import reap_stale_jails
from cogbox.jail.runtimes import RUNTIMES
from cogbox.kernel import control
from cogbox.kernel.control import MonitorGone
from cogbox.kernel.errors import KernelError
from cogbox.kernel.monitor import (
    EXIT_FILE,
    LOG_NAME,
    SOCKET_NAME,
    MonitorConfig,
    decode_spool,
    send_config,
)

_EXIT_WAIT_SECONDS = 15.0  # for the monitor to record an ended jail's exit
_WAIT_POLL_SECONDS = 0.02


class KernelProvisioner(ABC):
    """One kernel's jail, wherever it runs."""

    kind: str = ""
    pid: int | None = None  # the jail's init as this host sees it, where it can

    @abstractmethod
    def launch(
        self,
        spec: JailSpec,
        *,
        folder: Path,
        log: Path,
        run_dir: Path | None = None,
        hold_fds: Sequence[int] = (),
        keep: bool = False,
    ) -> None:
        """Start `spec` (the kernel); returns once it runs. `keep`: it outlives this process
        (and its IOPub is spooled for a re-attaching owner). KernelError if it did not start."""

    @abstractmethod
    def poll(self) -> JailExit | None:
        """How the jail ended, or None while it runs; cheap."""

    def wait(self, timeout: float | None = None) -> JailExit:
        """The jail's exit once it ended; subprocess.TimeoutExpired after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = self.poll()
            if ended is not None:
                return ended
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kernel", timeout or 0.0)
            time.sleep(_WAIT_POLL_SECONDS)

    @abstractmethod
    def send_signal(self, sig: int) -> None:
        """`sig` to the jail's init, which passes it on to the kernel's process group."""

    @abstractmethod
    def kill(self) -> None:
        """Kill the jail; its exit reason is KILLED."""

    @abstractmethod
    def cleanup(self) -> JailExit | None:
        """Remove the jail (killing what runs) and everything it held; its exit."""

    @abstractmethod
    def weigh(self, cpus: float | None) -> None:
        """The jail's CPU weight under contention: `cpus` tasks (None: one; 0: the lowest, for
        a kernel that waits idle in a pool). KernelError if it cannot be set."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """JSON-ready facts from which `attach` finds this kernel again."""

    @classmethod
    @abstractmethod
    def attach(cls, info: dict[str, Any]) -> "KernelProvisioner":
        """The provisioner of a live kernel, from its `info()`; MonitorGone if it ended."""

    @property
    @abstractmethod
    def workdir_view(self) -> Path | None:
        """Where this host sees the jail's /home/work live, if it can."""


def provisioner_for(runtime: str) -> KernelProvisioner:
    """The provisioner of a runtime name; KernelError naming it if unknown or missing."""
    return LocalProvisioner(runtime)


def attach_provisioner(info: dict[str, Any]) -> KernelProvisioner:
    """The provisioner of a persisted `info()`."""
    if info.get("kind") != LocalProvisioner.kind:
        raise KernelError(f"unknown kernel provisioner {info.get('kind')!r}")
    return LocalProvisioner.attach(info)


class LocalProvisioner(KernelProvisioner):
    """A jail on this host under its monitor process, with runc or runsc (gVisor)."""

    kind = "local"

    def __init__(self, runtime: str = "runc") -> None:
        if runtime not in RUNTIMES:
            raise KernelError(
                f"unknown runtime {runtime!r}; use one of {', '.join(sorted(RUNTIMES))}"
            )
        if shutil.which(runtime) is None:
            raise KernelError(
                f"runtime {runtime!r} is not installed on this host "
                f"(Debian: apt-get install {'gvisor' if runtime == 'runsc' else runtime})"
            )
        self.runtime = runtime
        self.folder: Path | None = None
        self.pid: int | None = None  # the jail's init, as the host sees it
        self.monitor_pid: int | None = None
        self.jail_id = ""
        self._workdir_view: Path | None = None
        self._pidfd: int | None = None
        self._init_gone = False
        self._exit: JailExit | None = None
        self._owner_pipe: int | None = None  # its EOF ends a monitor without `keep`
        self._cleaned = False

    # ------------------------------------------------------------------ launch / attach

    def launch(
        self,
        spec: JailSpec,
        *,
        folder: Path,
        log: Path,
        run_dir: Path | None = None,
        hold_fds: Sequence[int] = (),
        keep: bool = False,
    ) -> None:
        folder.mkdir(mode=0o700)  # one per kernel: a late exit of the last one spares it
        self.folder = folder
        owner_read = None
        if not keep:
            owner_read, self._owner_pipe = os.pipe2(os.O_CLOEXEC)
        config = MonitorConfig(
            spec=spec,
            folder=folder,
            log=log,
            runtime=self.runtime,
            run_dir=run_dir,
            spool=keep,
            keep=keep,
            hold_fds=list(hold_fds),
            owner_fd=owner_read,
            owner_pid=os.getpid(),
        )
        try:
            line = _MONITORS.run(config)
        finally:
            if owner_read is not None:
                os.close(owner_read)
        try:
            started = json.loads(line) if line else {}
        except ValueError:
            started = {}
        if not started.get("ok"):
            why = started.get("error") or self._monitor_log() or "it wrote nothing"
            self._close_owner_pipe()
            raise KernelError(f"the kernel's jail did not start: {why}")
        self._took(started)

    def _took(self, facts: dict[str, Any]) -> None:
        self.pid = int(facts["pid"]) if facts.get("pid") else None
        self.monitor_pid = int(facts["monitor_pid"])
        self.jail_id = str(facts.get("jail_id", ""))
        view = str(facts.get("workdir_view") or "")
        self._workdir_view = Path(view) if view else None
        if self.pid is not None and self._pidfd is None:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:
                self._init_gone = True  # ended already: poll() waits for its record

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "runtime": self.runtime,
            "folder": str(self.folder),
            "pid": self.pid,
            "monitor_pid": self.monitor_pid,
            "jail_id": self.jail_id,
            "workdir_view": str(self._workdir_view or ""),
        }

    @classmethod
    def attach(cls, info: dict[str, Any]) -> "LocalProvisioner":
        provisioner = cls(str(info.get("runtime") or "runc"))
        provisioner.folder = Path(str(info["folder"]))
        status = provisioner._request("status").header
        provisioner._took({**info, "pid": status.get("pid"), "monitor_pid": status["monitor_pid"]})
        if status.get("exit"):
            provisioner._exit = _exit_from(status["exit"])
        return provisioner

    # ------------------------------------------------------------------ Popen-like

    def poll(self) -> JailExit | None:
        if self._exit is not None:
            return self._exit
        if self._pidfd is not None and not select.select([self._pidfd], [], [], 0)[0]:
            return None
        known_gone = self._init_gone or self._pidfd is not None
        # The init ended (or was never seen): the monitor records why, a moment later.
        deadline = time.monotonic() + _EXIT_WAIT_SECONDS
        while True:
            try:
                status = self._request("status").header
            except MonitorGone:
                self._exit = self._recorded_exit()
                return self._exit
            if status.get("exit"):
                self._exit = _exit_from(status["exit"])
                return self._exit
            if not known_gone or time.monotonic() > deadline:
                return None
            time.sleep(_WAIT_POLL_SECONDS)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(MonitorGone):
                self._request("signal", signal=int(sig))

    def kill(self) -> None:
        with contextlib.suppress(MonitorGone):
            self._request("kill")

    def cleanup(self) -> JailExit | None:
        if self._cleaned:
            return self._exit
        self._cleaned = True
        error = ""
        try:
            header = self._request("cleanup", timeout=120.0).header
            if header.get("exit"):
                self._exit = _exit_from(header["exit"])
            error = str(header.get("cleanup_error") or "")
        except MonitorGone:
            # It died (and its jail with it): what it left is unlocked, so reap it.
            self._exit = self._exit or self._recorded_exit()
            with contextlib.suppress(Exception):
                reap_stale_jails()
        finally:
            self._close_owner_pipe()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        if error:
            raise KernelError(f"the kernel's jail was not cleaned up: {error}")
        return self._exit

    def detach(self) -> None:
        """Let go without stopping it (only a monitor that outlives its owner stays)."""
        self._cleaned = True
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    @property
    def workdir_view(self) -> Path | None:
        return self._workdir_view

    def weigh(self, cpus: float | None) -> None:
        if not self.jail_id:
            raise KernelError("cannot weigh a kernel whose jail has not started")
        try:
            JailCgroup(self.jail_id).weigh(cpus)
        except (CgroupError, OSError) as exc:
            raise KernelError(f"cannot weigh the kernel's jail: {exc}") from exc

    # ------------------------------------------------------------------ monitor extras

    def held_fds(self) -> list[int]:
        """Copies of the fds the monitor holds for the session (identity, runtime folder)."""
        return self._request("fds").fds

    def spool(self, since: int) -> tuple[list[tuple[int, list[bytes]]], dict[str, Any]]:
        """Spooled IOPub messages numbered `since` and later, and the spool's counts."""
        reply = self._request("spool", since=since)
        return decode_spool(reply.payload), reply.header

    def spool_ready(self) -> bool:
        return bool(self._request("status").header.get("spool_ready"))

    def _request(self, op: str, timeout: float = 10.0, **arguments: Any) -> control.Reply:
        assert self.folder is not None
        return control.request(self.folder / SOCKET_NAME, op, timeout, **arguments)

    def _recorded_exit(self) -> JailExit:
        assert self.folder is not None
        with contextlib.suppress(OSError, ValueError, KeyError):
            return _exit_from(json.loads((self.folder / EXIT_FILE).read_text()))
        return JailExit(
            -1,
            ExitReason.KILLED,
            "killed: the kernel's monitor ended unexpectedly, and its jail with it",
        )

    def _monitor_log(self) -> str:
        assert self.folder is not None
        with contextlib.suppress(OSError):
            return (self.folder / LOG_NAME).read_text(errors="replace").strip()[-2000:]
        return ""

    def _close_owner_pipe(self) -> None:
        if self._owner_pipe is not None:
            os.close(self._owner_pipe)
            self._owner_pipe = None


class _Monitors:
    """The monitors' fork server (cogbox.kernel.monitor's `main`), one per process, started
    at the first launch: each launch asks it to fork one fresh monitor.

    It is a plain child of this process: once this process ends, it reads EOF and exits
    (the monitors it forked live on). One that died is started again at the next launch.
    Its monitors see this process's environment as it was when the server started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: tuple[subprocess.Popen[bytes], socket.socket] | None = None

    def run(self, config: MonitorConfig) -> bytes:
        """Start a monitor with `config`; its ready line (empty if it died first)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self._fork(theirs.fileno())
        try:
            with ours:
                send_config(ours, config)
                return ours.makefile("rb").readline()
        except OSError:
            return b""

    def _fork(self, fd: int) -> None:
        with self._lock:
            for _ in range(2):  # a server that died since the last launch: start another
                if self._server is None or self._server[0].poll() is not None:
                    self._server = _spawn_fork_server()
                try:
                    socket.send_fds(self._server[1], [b"f"], [fd])
                    return
                except OSError:
                    self._server[1].close()
                    self._server = None
            raise KernelError("the kernels' monitor fork server does not start")


def _spawn_fork_server() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-m", "cogbox.kernel.monitor"],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
    return process, ours


_MONITORS = _Monitors()


def _exit_from(record: dict[str, Any]) -> JailExit:
    return JailExit(int(record["returncode"]), ExitReason(record["reason"]), str(record["message"]))
