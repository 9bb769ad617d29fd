"""The per-kernel monitor: who may control it, what the reapers leave it, its spool."""

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.bundle import state_dirs
from cogbox.jail.reaper import reap_stale_jails
from cogbox.kernel import control
from cogbox.kernel.connection import reap_stale_runtimes
from cogbox.kernel.errors import KernelError
from cogbox.kernel.monitor import SOCKET_NAME, Spool, decode_spool
from cogbox.kernel.provisioner import LocalProvisioner
from cogbox.kernel.session import Session, start_session
from tests.kernel.support import run, small_policy, stdout_of
from tests.seed import HELLO_WORLD

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
_PR_SET_DUMPABLE = 4


def provisioner_of(session: Session) -> LocalProvisioner:
    kernel = session._kernel
    assert kernel is not None and isinstance(kernel.provisioner, LocalProvisioner)
    return kernel.provisioner


def alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def wait_until_dead(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.05)


def as_nobody(control_socket: Path, *, through_fd: bool) -> str:
    """What a uid-65534 process gets asking the monitor to kill its jail."""
    fd = os.open(control_socket, os.O_PATH | os.O_CLOEXEC)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, then try
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            # Dumpable again, so /proc/self/fd is its own (setuid made it root's).
            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
            path = f"/proc/self/fd/{fd}" if through_fd else str(control_socket)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            try:
                client.connect(path)
                client.settimeout(1)
                try:  # a refusal comes at once, before any request
                    reply = client.recv(4096)
                except TimeoutError:
                    client.sendall(b'{"op": "kill"}')
                    client.shutdown(socket.SHUT_WR)
                    reply = client.recv(4096)
                answer = reply[4:].decode(errors="replace")
            except OSError as exc:
                answer = f"OSError {exc.errno}"
            os.write(writer, answer.encode()[:4000])
        finally:
            os._exit(0)
    os.close(writer)
    os.close(fd)
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return answer


def test_the_control_socket_refuses_a_non_root_peer(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as session:
        folder = provisioner_of(session).folder
        assert folder is not None
        path = folder / SOCKET_NAME
        assert (os.stat(folder).st_mode & 0o777, os.stat(path).st_mode & 0o777) == (0o700, 0o600)
        # The folder and the socket's mode keep it from connecting at all ...
        assert as_nobody(path, through_fd=False) == "OSError 13"
        assert as_nobody(path, through_fd=True) == "OSError 13"
        # ... and where they did not, its peer credentials are refused.
        os.chmod(path, 0o666)
        answer = as_nobody(path, through_fd=True)
        assert "OSError" not in answer, answer
        assert "uid 65534 may not control kernels" in answer
        # Judged from the host: nothing was killed, the kernel runs code.
        assert session.alive
        assert stdout_of(run(session, "print('still here')")) == "still here\n"


def test_a_root_peer_is_answered(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as session:
        folder = provisioner_of(session).folder
        assert folder is not None
        header = control.request(folder / SOCKET_NAME, "status").header
        assert header["running"] and header["pid"] == provisioner_of(session).pid
        awaited = asyncio.run(control.arequest(folder / SOCKET_NAME, "status")).header
        assert awaited["pid"] == header["pid"] and awaited["monitor_pid"] == header["monitor_pid"]
        with pytest.raises(KernelError, match="unknown op"):
            control.request(folder / SOCKET_NAME, "format_disk")


@pytest.fixture
def detached(python_image: Image, tmp_path: Path) -> Iterator[tuple[dict[str, object], Path]]:
    """A persisted session let go of: only its monitor holds it."""
    state_dir = tmp_path / "state"
    session = start_session(python_image, small_policy(), state_dir=state_dir)
    info = provisioner_of(session).info()
    runtime_dir = session._runtime.host_dir
    session.detach()
    try:
        yield info, runtime_dir
    finally:
        with contextlib.suppress(KernelError):
            Session.attach(state_dir).shutdown()


def test_reapers_leave_a_live_monitors_jail_and_take_a_dead_ones(
    detached: tuple[dict[str, object], Path],
) -> None:
    info, runtime_dir = detached
    jail_id = str(info["jail_id"])
    assert jail_id not in reap_stale_jails()
    assert runtime_dir.name not in reap_stale_runtimes(runtime_dir.parent)
    _, jails = state_dirs()
    assert (jails / jail_id).exists() and runtime_dir.exists()
    assert alive(int(str(info["pid"])))

    os.kill(int(str(info["monitor_pid"])), signal.SIGKILL)
    wait_until_dead(int(str(info["pid"])))  # the jail dies with its monitor
    assert jail_id in reap_stale_jails()
    assert runtime_dir.name in reap_stale_runtimes(runtime_dir.parent)
    assert not (jails / jail_id).exists() and not runtime_dir.exists()


_UNPERSISTED_OWNER = """
import sys, time
from cogbox.jail.policy import parse_policy
from cogbox.kernel.session import start_session
session = start_session(sys.argv[1], parse_policy(sys.argv[2], source="test"))
facts = session._kernel.provisioner.info()
print(facts["pid"], facts["monitor_pid"], flush=True)
time.sleep(600)
"""


def test_a_kernel_without_state_dir_ends_with_its_owner(python_image: Image) -> None:
    policy = "limits:\n  memory: 256m\n  workdir_quota: 64m\n  pids: 64\n"
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_UNPERSISTED_OWNER), python_image.name, policy],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    jail_pid, monitor_pid = (int(word) for word in owner.stdout.readline().split())
    assert alive(jail_pid) and alive(monitor_pid)
    owner.kill()
    owner.wait(10)
    wait_until_dead(jail_pid)
    wait_until_dead(monitor_pid)


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed")
def test_a_runsc_session_runs_the_seed_snippets_under_gvisor(python_image: Image) -> None:
    with start_session(python_image, small_policy(), runtime="runsc") as session:
        # gVisor's Sentry reports its own kernel version, not the host's.
        assert stdout_of(run(session, "import os; print(os.uname().release)")) == "4.4.0\n"
        assert stdout_of(run(session, HELLO_WORLD)) == "hello world\n"


def test_an_unknown_runtime_is_refused_by_name(python_image: Image) -> None:
    with pytest.raises(KernelError, match="unknown runtime 'kata'"):
        start_session(python_image, small_policy(), runtime="kata")


# ---------------------------------------------------------------------- the spool (no root)


def _message(topic: bytes, size: int) -> list[bytes]:
    return [topic, b"<IDS|MSG>", b"sig", b"x" * size]


def _status(state: str, msg_id: str, kind: str = "execute_request") -> list[bytes]:
    parent = json.dumps({"msg_id": msg_id, "msg_type": kind}).encode()
    content = json.dumps({"execution_state": state}).encode()
    return [b"kernel.1.status", b"<IDS|MSG>", b"sig", b"{}", parent, b"{}", content]


def test_the_spool_keeps_a_prefix_within_its_cap_and_counts_the_rest() -> None:
    spool = Spool(cap=1000)
    spool.add(_message(b"kernel.1.stream", 400))
    spool.add(_message(b"kernel.1.stream", 400))
    spool.add(_message(b"kernel.1.stream", 400))  # over the cap: dropped
    spool.add(_message(b"kernel.1.stream", 10))  # would fit, but the kept part is a prefix
    spool.add(_message(b"kernel.1.status", 10))  # status: kept past the cap (a replay's end)
    payload, info = spool.since(0)
    kept = decode_spool(payload)
    assert [number for number, _ in kept] == [0, 1, 4]
    assert kept[0][1] == _message(b"kernel.1.stream", 400)
    assert (info["dropped_messages"], info["dropped_bytes"]) == (2, 427 + 37)
    assert spool.ready.is_set()


def test_an_execute_requests_busy_starts_a_fresh_spool_and_since_skips_what_was_read() -> None:
    spool = Spool(cap=1000)
    spool.add(_status("busy", "a"))
    spool.add(_message(b"kernel.1.stream", 800))
    spool.add(_message(b"kernel.1.stream", 800))  # dropped: over the cap
    spool.add(_status("busy", "k", kind="kernel_info_request"))  # not a run: kept, no reset
    assert spool.since(0)[1]["dropped_messages"] == 1
    spool.add(_status("busy", "b"))  # the next run begins: what came before is forgotten
    spool.add(_message(b"kernel.1.stream", 5))
    spool.add(_status("idle", "b"))
    payload, info = spool.since(0)
    assert [number for number, _ in decode_spool(payload)] == [4, 5, 6]
    assert (info["dropped_messages"], info["begun"], info["end"]) == (0, ["a", "b"], 7)
    payload, _ = spool.since(5)
    assert [number for number, _ in decode_spool(payload)] == [5, 6]


def test_statuses_the_kernels_code_forges_only_start_its_own_spools() -> None:
    # The jailed code can publish on IOPub: a malformed status must not break the monitor.
    spool = Spool(cap=1000)
    for frames in (
        [b"kernel.1.status"],
        [b"kernel.1.status", b"<IDS|MSG>", b"sig", b"{}", b"execute_request", b"{}", b"busy"],
        [b"kernel.1.status", b"<IDS|MSG>", b"sig", b"{}", b"[1]", b"{}", b"{}"],
    ):
        spool.add(frames)
    payload, info = spool.since(0)
    assert (len(decode_spool(payload)), info["begun"]) == (3, [])


def test_an_oversized_forged_status_is_kept_but_never_parsed() -> None:
    # Parsing a tenant's 1 MB "parent header" would cost the host a multiple of it in memory.
    spool = Spool(cap=1 << 22)
    parent = json.dumps({"msg_id": "f", "msg_type": "execute_request", "pad": "x" * (1 << 20)})
    content = json.dumps({"execution_state": "busy"}).encode()
    spool.add([b"kernel.1.status", b"<IDS|MSG>", b"sig", b"{}", parent.encode(), b"{}", content])
    payload, info = spool.since(0)
    assert (len(decode_spool(payload)), info["begun"]) == (1, [])
