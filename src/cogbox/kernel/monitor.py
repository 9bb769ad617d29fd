"""A kernel's monitor: the process that owns its jail, so the jail outlives its owner.

    python -m cogbox.kernel.monitor      (the fork server; fd 0: a socket to its starter)

In the spirit of conmon or containerd's shim. Its starter (`LocalProvisioner.launch`)
keeps one fork server per process (`main`: the imports done once, they cost a fifth of a
second of CPU) that forks a fresh monitor per kernel, sends that one the pickled config
with the fds it is to hold, and reads one "ready" line back; the monitor has forked away
by then
(its own session, reparented to init), so the death of its starter never reaches it. It
owns the `Jail`: runc (the parent of the jail's tini) starts from its threads with a
parent-death signal, and its chmod guard, watchdog and bundle lock ("driver alive") live
here. It holds the jail's stdout/stderr (the capped `KernelLog`) and the fds that keep the
session's host identity and runtime folder held, and hands copies of them to a
re-attaching owner.

When the jail ends its `JailExit` (computed before the cgroup is removed) is written to
`exit.json`. With `spool`, every IOPub message (raw, still signed) is kept since the last
execute request began (its "busy" status: the spool starts afresh by itself, so a run costs
its owner no round trip), up to `SPOOL_CAP_BYTES`; past that they are dropped and counted.
Without `keep`, the monitor dies with its owner (an owner pipe's EOF): sessions nobody can
re-attach to end as they did before monitors existed.

Control requests (cogbox.kernel.control; root peers only): status, signal, kill, spool,
fds, cleanup. `cleanup` removes the jail, answers with its exit and ends the
monitor.
"""

import contextlib
import json
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from cogbox import hostfs
from cogbox.jail.launcher import Jail, JailError, JailExit, JailSpec
from cogbox.kernel import control
from cogbox.kernel.kernel_log import KernelLog
from cogbox.kernel.messages import DELIMITER, has_input
from cogbox.kernel.stop_signal import StopSignal

SOCKET_NAME = "control"
EXIT_FILE = "exit.json"
LOG_NAME = "monitor.log"
SPOOL_CAP_BYTES = 64 << 20
_STATUS_CAP_BYTES = 1 << 20  # status messages kept past the cap
_SPOOL_REPLY_BYTES = 8 << 20  # one `spool` reply carries at most this much; ask again
_IOPUB_NAME = "k-2"  # cogbox.kernel.connection's iopub socket
_PROVE_POLL_SECONDS = 0.02
_CONN_TIMEOUT_SECONDS = 5.0
_LENGTH = struct.Struct(">Q")
_BEGUN_KEPT = 16  # the requests last begun, newest last, that a spool reply names
# A status's parent header and content are a few hundred bytes; the jailed code can publish
# bigger ones, which are kept like any message but never parsed.
_STATUS_PART_BYTES = 4 << 10
_MAX_FDS = 16
# After a wake-up the spool waits this long before it drains: a run's messages come within a
# few ms of each other, so most runs cost one wake-up instead of one per message. Nothing
# waits on the spool live (a replay reads it in rounds of POLL_MS).
_SPOOL_GATHER_S = 0.002


@dataclass
class MonitorConfig:
    """What a monitor runs and keeps (picklable: it travels on the monitor's stdin)."""

    spec: JailSpec
    folder: Path  # host-only, 0700: the control socket, exit record, monitor log
    log: Path  # the kernel's own stdout/stderr (KernelLog)
    runtime: str = "runc"
    run_dir: Path | None = None  # the kernel's runtime tmpfs, where its iopub socket is
    spool: bool = False
    keep: bool = False  # outlive the owner (a persisted session) instead of dying with it
    hold_fds: list[int] = field(default_factory=list)  # handed out by `fds`, in this order
    owner_fd: int | None = None  # read end of the owner pipe (without `keep`)
    owner_pid: int | None = None  # its starter, recorded in the jail's driver record


def exit_to_dict(ended: JailExit) -> dict[str, Any]:
    return {"returncode": ended.returncode, "reason": str(ended.reason), "message": ended.message}


class Spool:
    """Raw IOPub messages since the last execute request began, bounded; what did not fit
    is counted. The kernel's "busy" status for an execute_request starts a fresh spool (it
    comes after everything the request before published), and the spool names the
    requests last begun, so a re-attaching owner can tell a run not yet begun from one
    that ended before the current one."""

    def __init__(self, cap: int = SPOOL_CAP_BYTES) -> None:
        self.cap = cap
        self.ready = threading.Event()  # a message arrived: the subscription is live
        self._lock = threading.Lock()
        self._messages: list[tuple[int, list[bytes]]] = []
        self._used = 0
        self._status_used = 0
        self._next = 0
        self._begun: deque[str] = deque(maxlen=_BEGUN_KEPT)
        self.dropped_messages = 0
        self.dropped_bytes = 0

    def add(self, frames: list[bytes]) -> None:
        size = sum(len(frame) for frame in frames)
        # Once full it keeps nothing more (what was kept stays a prefix of the run), but
        # status messages: a replay ends at the run's "idle". Bounded too: the jailed code
        # can publish on IOPub itself (and so start spools of its own: only its own runs'
        # replay is at stake).
        status = bool(frames) and frames[0].endswith(b".status")
        begun = _begun_request(frames) if status else None
        with self._lock:
            if begun is not None:
                self._clear()
                self._begun.append(begun)
            seq, self._next = self._next, self._next + 1
            full = self.dropped_messages > 0 or self._used + size > self.cap
            if full and not (status and self._status_used + size <= _STATUS_CAP_BYTES):
                self.dropped_messages += 1
                self.dropped_bytes += size
            else:
                self._messages.append((seq, frames))
                if full:
                    self._status_used += size
                else:
                    self._used += size
        if not self.ready.is_set():
            self.ready.set()

    def _clear(self) -> None:
        self._messages.clear()
        self._used = self._status_used = 0
        self.dropped_messages = self.dropped_bytes = 0

    def since(self, seq: int) -> tuple[bytes, dict[str, Any]]:
        """Messages numbered `seq` and later (as many as fit one reply), encoded, and the
        counts (with `begun`: the msg_ids of the execute requests last begun, newest last)."""
        parts: list[bytes] = []
        size = 0
        count = 0
        with self._lock:
            following = self._next
            for number, frames in self._messages:
                if number < seq:
                    continue
                if size and size > _SPOOL_REPLY_BYTES:
                    following = number
                    break
                parts.append(struct.pack(">QI", number, len(frames)))
                for frame in frames:
                    parts.append(struct.pack(">I", len(frame)))
                    parts.append(frame)
                size += sum(len(frame) for frame in frames)
                count += 1
            info: dict[str, Any] = {
                "count": count,
                "next": following,
                "end": self._next,
                "dropped_messages": self.dropped_messages,
                "dropped_bytes": self.dropped_bytes,
                "begun": list(self._begun),
            }
        return b"".join(parts), info


def _begun_request(frames: list[bytes]) -> str | None:
    """The msg_id of the execute_request whose "busy" status `frames` is, else None."""
    try:
        split = frames.index(DELIMITER)
        parent, content = frames[split + 3], frames[split + 5]
    except (ValueError, IndexError):
        return None
    if len(parent) > _STATUS_PART_BYTES or len(content) > _STATUS_PART_BYTES:
        return None
    if b"execute_request" not in parent or b"busy" not in content:
        return None  # most statuses: not parsed
    try:
        header, state = json.loads(parent), json.loads(content)
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(state, dict):
        return None
    msg_id = header.get("msg_id")
    if header.get("msg_type") != "execute_request" or state.get("execution_state") != "busy":
        return None
    return msg_id if isinstance(msg_id, str) else None


def decode_spool(payload: bytes) -> list[tuple[int, list[bytes]]]:
    """The (number, frames) messages of a `spool` reply's payload."""
    messages: list[tuple[int, list[bytes]]] = []
    offset = 0
    while offset < len(payload):
        number, count = struct.unpack_from(">QI", payload, offset)
        offset += 12
        frames = []
        for _ in range(count):
            (length,) = struct.unpack_from(">I", payload, offset)
            offset += 4
            frames.append(payload[offset : offset + length])
            offset += length
        messages.append((number, frames))
    return messages


class Monitor:
    """The running monitor: its jail, control socket and (optional) IOPub spool."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.jail = Jail(runtime=config.runtime, owner_pid=config.owner_pid)
        self.spool = Spool() if config.spool else None
        self.log: KernelLog | None = None
        self.exit: JailExit | None = None
        self._stop = StopSignal()
        self._exit_lock = threading.Lock()
        self._server: socket.socket | None = None

    def start(self) -> dict[str, Any]:
        """Start the jail and open the control socket; what the starter needs to know."""
        self.log = KernelLog(self.config.log)
        try:
            self.jail.start(
                self.config.spec,
                stdin=subprocess.DEVNULL,
                stdout=self.log.writer,
                stderr=self.log.writer,
            )
        finally:
            self.log.close_writer()
        self._server = _listen(self.config.folder / SOCKET_NAME)
        threading.Thread(target=self._watch_jail, name="monitor-jail", daemon=True).start()
        if self.spool is not None:
            threading.Thread(target=self._spool_iopub, name="monitor-spool", daemon=True).start()
        if self.config.owner_fd is not None:
            threading.Thread(target=self._watch_owner, name="monitor-owner", daemon=True).start()
        return {
            "ok": True,
            "pid": self.jail.pid,
            "jail_id": self.jail.id,
            "monitor_pid": os.getpid(),
            "workdir_view": str(self.jail.workdir_view or ""),
        }

    # ------------------------------------------------------------------ threads

    def _watch_jail(self) -> None:
        try:
            ended = self.jail.wait()
        except JailError:
            return
        self._record(ended)

    def _record(self, ended: JailExit | None) -> None:
        with self._exit_lock:
            if self.exit is not None or ended is None:
                return
            self.exit = ended
            temporary = self.config.folder / f"{EXIT_FILE}.tmp"
            with contextlib.suppress(OSError):
                with open(temporary, "w") as handle:
                    json.dump(exit_to_dict(ended), handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.config.folder / EXIT_FILE)

    def _watch_owner(self) -> None:
        assert self.config.owner_fd is not None
        with contextlib.suppress(OSError):
            while os.read(self.config.owner_fd, 64):
                pass
        # The owner is gone and nobody can re-attach: end like a jail whose driver died.
        self._cleanup()
        shutil.rmtree(self.config.folder, ignore_errors=True)
        os._exit(0)

    def _spool_iopub(self) -> None:
        assert self.spool is not None and self.config.run_dir is not None
        identity = self.config.spec.identity
        owner = identity.host_uid if identity is not None else os.geteuid()
        fd = None
        while fd is None and not self._stop.is_set() and self.jail.poll() is None:
            try:
                with hostfs.open_dir(self.config.run_dir) as folder:
                    device = os.fstat(folder).st_dev
                    fd = hostfs.open_socket(folder, _IOPUB_NAME, owner=owner, device=device)
            except FileNotFoundError:
                self._stop.wait(_PROVE_POLL_SECONDS)
            except (OSError, hostfs.HostPathError) as exc:
                print(f"cogbox monitor: not spooling iopub: {exc}", file=sys.stderr, flush=True)
                return
        if fd is None:
            return
        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"ipc://{hostfs.fd_path(fd)}")
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self._stop.fd, zmq.POLLIN)
        while not self._stop.is_set():
            poller.poll()
            self._stop.wait(_SPOOL_GATHER_S)
            while has_input(sub):  # all that waits, in one wake-up: a run's come in bursts
                self.spool.add(sub.recv_multipart())

    # ------------------------------------------------------------------ control

    def serve(self) -> None:
        assert self._server is not None
        waiting = [self._server.fileno(), self._stop.fd]
        while not self._stop.is_set():
            if waiting[0] not in select.select(waiting, [], [])[0]:
                continue
            with contextlib.suppress(OSError):
                conn, _ = self._server.accept()
                with conn:
                    conn.settimeout(_CONN_TIMEOUT_SECONDS)
                    self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        uid = control.peer_uid(conn)
        if uid not in (0, os.geteuid()):
            control.send_reply(conn, {"error": f"uid {uid} may not control kernels"})
            return
        try:
            body = control.read_request(conn)
        except ValueError as exc:
            control.send_reply(conn, {"error": f"bad request: {exc}"})
            return
        op = body["op"]
        if op == "status":
            control.send_reply(conn, self._status())
        elif op == "signal":
            number = body.get("signal")
            if not isinstance(number, int) or number not in signal.valid_signals():
                control.send_reply(conn, {"error": f"no such signal: {number!r}"})
                return
            self.jail.send_signal(number)
            control.send_reply(conn, {})
        elif op == "kill":
            self.jail.kill()
            control.send_reply(conn, {})
        elif op == "spool":
            self._answer_spool(conn, body.get("since"))
        elif op == "fds":
            control.send_reply(conn, {"count": len(self.config.hold_fds)}, fds=self.config.hold_fds)
        elif op == "cleanup":
            error = self._cleanup()
            ended = self.exit
            header: dict[str, Any] = {"exit": exit_to_dict(ended) if ended else None}
            if error:
                header["cleanup_error"] = error
            control.send_reply(conn, header)
            self._stop.set()
        else:
            control.send_reply(conn, {"error": f"unknown op {op!r}"})

    def _answer_spool(self, conn: socket.socket, since: Any) -> None:
        if self.spool is None:
            control.send_reply(conn, {"error": "this monitor keeps no spool"})
            return
        if not isinstance(since, int) or since < 0:
            control.send_reply(conn, {"error": "since must be a message number"})
            return
        payload, info = self.spool.since(since)
        control.send_reply(conn, info, payload)

    def _status(self) -> dict[str, Any]:
        ended = self.exit or self.jail.poll()
        self._record(ended)
        return {
            "running": ended is None,
            "exit": exit_to_dict(ended) if ended else None,
            "pid": self.jail.pid,
            "monitor_pid": os.getpid(),
            "spool_ready": self.spool.ready.is_set() if self.spool is not None else True,
        }

    def _cleanup(self) -> str:
        error = ""
        try:
            self.jail.cleanup()
        except JailError as exc:
            error = str(exc)
        self._record(self.jail.exit)
        if self.log is not None:
            self.log.stop()
        return error


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(16)
    return server


def main() -> None:
    """The monitors' fork server: its imports done once, it forks a fresh monitor per start.

    fd 0 is a socket to its starter (`LocalProvisioner`); each request is one byte with one
    fd, the socket on which that monitor's config arrives. EOF (the starter ended) ends it.
    A fork costs a few milliseconds; importing what a monitor needs (the jail, its policy
    model) costs a fifth of a second of CPU, which a burst of starts would pay per kernel.
    """
    factory = socket.socket(fileno=0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped by the kernel
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(factory, 1, 1)
        except InterruptedError:  # pragma: no cover - retried by Python itself
            continue
        if not message:
            os._exit(0)
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            continue
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it waits for runc and mkfs
            factory.close()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            _become_monitor(socket.socket(fileno=fds[0]))
        os.close(fds[0])


def _become_monitor(starter: socket.socket) -> None:
    # It waits on `starter` for its config: 8 bytes of length with the fds it holds, then
    # the pickled MonitorConfig.
    header, fds, _, _ = socket.recv_fds(starter, _LENGTH.size, _MAX_FDS)
    if not header:
        os._exit(0)  # its starter ended before it needed a monitor
    (length,) = _LENGTH.unpack(header + _read_exactly(starter, _LENGTH.size - len(header)))
    config: MonitorConfig = pickle.loads(_read_exactly(starter, length))
    config.hold_fds = fds[: len(config.hold_fds)]
    if not config.keep:
        config.owner_fd = fds[len(config.hold_fds)]
    # Away from the starter and the fork server: a grandchild in its own session,
    # reparented to init.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    log = os.open(config.folder / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    monitor = None
    try:
        monitor = Monitor(config)
        started = monitor.start()
    except BaseException as exc:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor._cleanup()
        starter.sendall((json.dumps({"ok": False, "error": str(exc)}) + "\n").encode())
        os._exit(1)
    starter.sendall((json.dumps(started) + "\n").encode())
    starter.close()
    try:
        monitor.serve()
    finally:
        shutil.rmtree(config.folder, ignore_errors=True)
    os._exit(0)


def send_config(starter: socket.socket, config: MonitorConfig) -> None:
    """Hand `config` (and its fds: hold_fds, then owner_fd) to a waiting monitor."""
    fds = [*config.hold_fds, *([config.owner_fd] if config.owner_fd is not None else [])]
    data = pickle.dumps(config)
    socket.send_fds(starter, [_LENGTH.pack(len(data))], fds)
    starter.sendall(data)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = conn.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the monitor's starter ended while sending its config")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    main()
