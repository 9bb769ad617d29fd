"""Attack family "host runtime folder": what the host does with the kernel's /run/cogbox.

The jail can write its runtime folder (/run/cogbox: the connection file and the kernel's
sockets) and its kernel's own stdout/stderr. Every case plants something there from inside
a real session and judges from the host: a canary file the host must not write, a host Unix
socket that must get no connection, host disk usage, the size of the kernel's host log, the
folders left on the host. See docs/jail.md, "Jail-writable folders and how the host treats
them".
"""

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from cogbox.images.store import Image
from cogbox.kernel import connection
from cogbox.kernel.events import Finished, KernelDied
from cogbox.kernel.session import Session, start_session
from tests.attacks.harness import HostCanary, Neighbour
from tests.kernel.support import run, small_policy, stdout_of

CANARY = b"host canary: the service must never write here\n"
GIB = 1 << 30
# Host disk that one case may use (other engineers' jails share this disk).
DISK_SLACK_BYTES = 16 << 20
_JAIL_CGROUP = re.compile(r"/(cogbox-[A-Za-z0-9._-]+)/")  # as in harness.running_jails


@pytest.fixture
def session(python_image: Image) -> Iterator[Session]:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    with start_session(python_image, small_policy()) as started:
        yield started


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A root-owned host file outside every jail."""
    path = tmp_path / "canary.txt"
    path.write_bytes(CANARY)
    return path


class HostListener:
    """A Unix socket on the host, as a root-only service would have; counts connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            if select.select([self._server], [], [], 0.05)[0]:
                peer, _ = self._server.accept()
                self.connections += 1
                peer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[HostListener]:
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    running = HostListener(folder / "svc.sock")
    try:
        yield running
    finally:
        running.close()


def ok(session: Session, code: str) -> str:
    """Run `code` in the kernel; its stdout, after checking it finished ok."""
    events = run(session, code, timeout=60)
    assert events[-1] == Finished("ok", events[-1].execution_count), events  # type: ignore[union-attr]
    return stdout_of(events)


def batch_ok(session: Session, exec: str) -> str:
    events = list(session.execute_batch(None, exec, timeout=60))
    assert isinstance(events[-1], Finished) and events[-1].exit_code == 0, events
    return stdout_of(events)


def attach_like_jupyter(session: Session, seconds: float = 1.0) -> None:
    """Dial every channel of the session as a Jupyter client (service/jupyter.py) would."""
    info = session.connection_info()
    context = zmq.Context()
    try:
        sockets = []
        for channel in ("shell", "iopub", "stdin", "control", "hb"):
            sock = context.socket(zmq.DEALER)
            sock.connect(connection.channel_endpoint(info, channel))
            sockets.append(sock)
        time.sleep(seconds)
        for sock in sockets:
            sock.close(linger=0)
    finally:
        context.term()


def own_running_jails() -> set[str]:
    """Jails with a process descending from this test process (others' jails share the host)."""
    parents: dict[int, int] = {}
    jails: dict[int, set[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            parents[int(entry.name)] = int(status.split("PPid:")[1].split()[0])
            jails[int(entry.name)] = set(_JAIL_CGROUP.findall((entry / "cgroup").read_text()))
        except (OSError, IndexError, ValueError):
            continue
    mine: set[str] = set()
    for pid, found in jails.items():
        ancestor = parents.get(pid, 0)
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = parents.get(ancestor, 0)
        if ancestor == os.getpid():
            mine |= found
    return mine


@pytest.fixture(autouse=True)
def host_and_neighbour_unaffected(neighbour: Neighbour, host: HostCanary) -> Iterator[None]:
    """The suite's after-case checks, with "no jail left" counted for this process only."""
    before = own_running_jails()
    yield
    neighbour.assert_answers()
    host.assert_unchanged()
    left = own_running_jails() - before
    assert not left, f"jails of this case still run processes: {sorted(left)}"


def host_free_bytes() -> int:
    stats = os.statvfs("/run")
    return stats.f_bavail * stats.f_frsize


# ---------------------------------------------------------------- finding 1: batch.py


def test_symlinked_batch_py_does_not_overwrite_a_host_file(session: Session, canary: Path) -> None:
    ok(session, f"import os; os.symlink({str(canary)!r}, '/run/cogbox/batch.py')")
    assert batch_ok(session, "echo ran") == "ran\n"
    assert canary.read_bytes() == CANARY


def test_dangling_link_at_batch_py_creates_no_host_file(session: Session, tmp_path: Path) -> None:
    target = tmp_path / "created-by-host.py"
    ok(session, f"import os; os.symlink({str(target)!r}, '/run/cogbox/batch.py')")
    assert batch_ok(session, "echo ran") == "ran\n"
    assert not target.exists()


def test_folder_planted_at_batch_py_does_not_break_batch(session: Session) -> None:
    ok(session, "import os; os.mkdir('/run/cogbox/batch.py')")
    assert batch_ok(session, "echo ran") == "ran\n"


def test_fifo_planted_at_batch_py_does_not_break_batch(session: Session) -> None:
    ok(session, "import os; os.mkfifo('/run/cogbox/batch.py')")
    assert batch_ok(session, "echo ran") == "ran\n"


def test_hard_link_at_batch_py_is_not_written_through(session: Session) -> None:
    ok(
        session,
        "import os; open('/run/cogbox/mine', 'w').write('mine');"
        " os.link('/run/cogbox/mine', '/run/cogbox/batch.py')",
    )
    assert batch_ok(session, "echo ran") == "ran\n"
    assert ok(session, "print(open('/run/cogbox/mine').read())") == "mine\n"


def test_link_swapped_in_a_loop_during_batches_never_reaches_the_host(
    session: Session, canary: Path
) -> None:
    ok(
        session,
        "import os, threading\n"
        "def swap():\n"
        "    while True:\n"
        f"        for make in (lambda: os.symlink({str(canary)!r}, '/run/cogbox/batch.py'),\n"
        "                     lambda: os.unlink('/run/cogbox/batch.py')):\n"
        "            try: make()\n"
        "            except OSError: pass\n"
        "threading.Thread(target=swap, daemon=True).start()\n",
    )
    for _ in range(5):
        assert batch_ok(session, "echo ran") == "ran\n"
    assert canary.read_bytes() == CANARY


def test_batch_runner_travels_in_band_on_python_2_7(cntk_image: Image, canary: Path) -> None:
    with start_session(cntk_image) as cntk:
        ok(cntk, f"import os; os.symlink({str(canary)!r}, '/run/cogbox/batch.py')")
        assert batch_ok(cntk, "echo ran; exit 0") == "ran\n"
    assert canary.read_bytes() == CANARY


# ---------------------------------------------------------------- kernel.json


@pytest.mark.parametrize(
    "plant",
    [
        "os.symlink(%(canary)r, '/run/cogbox/kernel.json')",
        "os.mkdir('/run/cogbox/kernel.json'); open('/run/cogbox/kernel.json/x', 'w').close()",
        "os.mkfifo('/run/cogbox/kernel.json')",
        "os.symlink('/run/cogbox/nowhere/kernel.json', '/run/cogbox/kernel.json')",
        "open('/run/cogbox/m', 'w').close(); os.link('/run/cogbox/m', '/run/cogbox/kernel.json')",
    ],
    ids=["symlink-to-host-file", "folder", "fifo", "dangling-link", "hard-link"],
)
def test_planted_connection_file_does_not_stop_a_restart(
    session: Session, canary: Path, plant: str
) -> None:
    ok(
        session,
        "import os; os.unlink('/run/cogbox/kernel.json'); " + plant % {"canary": str(canary)},
    )
    session.restart()
    assert ok(session, "print(6 * 7)") == "42\n"
    assert canary.read_bytes() == CANARY


# ---------------------------------------------------------------- finding 2: sockets


def test_sockets_relinked_to_a_host_socket_are_never_dialled(
    session: Session, listener: HostListener
) -> None:
    ok(
        session,
        "import os\n"
        "for n in range(1, 6):\n"
        "    name = '/run/cogbox/k-' + str(n)\n"
        f"    os.unlink(name); os.symlink({str(listener.path)!r}, name)\n",
    )
    assert ok(session, "print(1 + 1)") == "2\n"
    assert batch_ok(session, "echo ran") == "ran\n"
    attach_like_jupyter(session)
    session.restart()
    assert ok(session, "print(1 + 1)") == "2\n"
    attach_like_jupyter(session)
    assert listener.connections == 0


def test_sockets_swapped_for_links_in_a_loop_are_never_dialled(
    session: Session, listener: HostListener
) -> None:
    ok(
        session,
        "import os, threading\n"
        "def swap():\n"
        "    while True:\n"
        "        for n in range(1, 6):\n"
        "            name = '/run/cogbox/k-' + str(n)\n"
        "            try:\n"
        "                os.unlink(name)\n"
        f"                os.symlink({str(listener.path)!r}, name)\n"
        "            except OSError: pass\n"
        "threading.Thread(target=swap, daemon=True).start()\n",
    )
    for _ in range(5):
        attach_like_jupyter(session, 0.2)
        assert ok(session, "print(1 + 1)") == "2\n"
    assert listener.connections == 0


def test_sockets_replaced_by_folders_fifos_and_files_do_not_stop_a_restart(
    session: Session, listener: HostListener
) -> None:
    ok(
        session,
        "import os\n"
        "for n in range(1, 6): os.unlink('/run/cogbox/k-' + str(n))\n"
        "os.mkdir('/run/cogbox/k-1'); os.mkdir('/run/cogbox/k-1/deep')\n"
        "os.mkfifo('/run/cogbox/k-2')\n"
        "open('/run/cogbox/k-3', 'w').write('not a socket')\n"
        "os.symlink('/nonexistent', '/run/cogbox/k-4')\n"
        f"os.symlink({str(listener.path)!r}, '/run/cogbox/k-5')\n",
    )
    attach_like_jupyter(session, 0.5)
    session.restart()
    assert ok(session, "print(1 + 1)") == "2\n"
    assert listener.connections == 0


# ---------------------------------------------------------------- finding 3: host disk


def test_fallocate_in_the_runtime_folder_does_not_fill_the_host_disk(session: Session) -> None:
    before = host_free_bytes()
    out = ok(
        session,
        "import os\n"
        "fd = os.open('/run/cogbox/fill', os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "try:\n"
        f"    os.posix_fallocate(fd, 0, {GIB}); print('allocated')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n",
    )
    used = before - host_free_bytes()
    assert used < DISK_SLACK_BYTES, (out, used)


def test_writing_a_gib_to_the_runtime_folder_does_not_fill_the_host_disk(
    session: Session,
) -> None:
    before = host_free_bytes()
    ok(
        session,
        "import os\n"
        "fd = os.open('/run/cogbox/dd', os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "try:\n"
        "    for _ in range(1024): os.write(fd, b'x' * (1 << 20))\n"
        "except OSError as exc: print('refused', exc.errno)\n",
    )
    assert before - host_free_bytes() < DISK_SLACK_BYTES


def test_flooding_the_kernels_own_stdout_stays_within_the_log_cap(session: Session) -> None:
    before = host_free_bytes()
    started = time.monotonic()
    ok(
        session,
        "import os, sys\n"
        "fd = getattr(sys.stdout, '_original_stdstream_copy', None) or 1\n"
        "chunk = b'f' * (1 << 20)\n"
        "for _ in range(1024): os.write(fd, chunk)\n",
    )
    flood_seconds = time.monotonic() - started
    assert before - host_free_bytes() < DISK_SLACK_BYTES
    logs = list(session._runtime.host_dir.glob("kernel.log*"))
    assert logs and sum(p.stat().st_size for p in logs) <= 2 * connection.LOG_CAP_BYTES
    responsive = time.monotonic()
    assert ok(session, "print(1 + 1)") == "2\n"
    assert time.monotonic() - responsive < 2.0, flood_seconds


# ---------------------------------------------------------------- reaping


def test_runtime_folders_are_removed_at_shutdown(python_image: Image) -> None:
    with start_session(python_image, small_policy()) as started:
        runtime = started._runtime
        ok(started, "open('/run/cogbox/left', 'w').write('x')")
    assert not runtime.path.exists()
    assert not runtime.host_dir.exists()
    assert not os.path.ismount(runtime.path)


def test_runtime_folder_of_a_crashed_service_is_reaped() -> None:
    # A process makes a runtime folder (mounted, with its key) and is killed: nobody holds
    # its lock any more.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal; from cogbox.kernel.connection import RuntimeDir\n"
            "r = RuntimeDir.create(); print(r.host_dir, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    left = Path(child.stdout.strip())
    assert left.is_dir(), child.stderr
    assert left.name in connection.reap_stale_runtimes()
    assert not left.exists()


def test_reaper_leaves_live_and_recent_old_format_folders_alone(session: Session) -> None:
    old_base = Path("/run/cogbox/s")
    old_base.mkdir(parents=True, exist_ok=True)
    recent, ancient = old_base / "h1recent", old_base / "h1ancient"
    for folder in (recent, ancient):
        folder.mkdir(exist_ok=True)
        (folder / "kernel.json").write_text("{}")
    two_days_ago = time.time() - 2 * 86400
    os.utime(ancient, (two_days_ago, two_days_ago))
    try:
        connection.reap_stale_runtimes()
        assert recent.is_dir() and not ancient.exists()
        assert session._runtime.path.is_dir()
        assert ok(session, "print(1 + 1)") == "2\n"
    finally:
        shutil.rmtree(recent, ignore_errors=True)
        shutil.rmtree(ancient, ignore_errors=True)


# ---------------------------------------------------------------- finding 6: failed restart


def test_failed_restart_leaves_the_session_clearly_dead_and_restartable(
    session: Session,
) -> None:
    # The tenant shadows the kernel's launcher in /home/work (the kernel's cwd).
    ok(session, "open('/home/work/ipykernel_launcher.py', 'w').write('raise SystemExit(3)')")
    with pytest.raises(Exception, match="kernel"):
        session.restart()
    events = list(session.execute("print(1)"))
    assert len(events) == 1 and isinstance(events[0], KernelDied), events
    assert "restart failed" in events[0].message
    assert not session.alive and session.restart_failure is not None
    (session.workdir / "ipykernel_launcher.py").unlink()
    session.restart()
    assert ok(session, "print(1 + 1)") == "2\n"
