"""Attack family: resource exhaustion.

Fork and thread bombs, memory hogs, filling /home/work, /tmp and /dev/shm, output floods,
orphans left running after the command exits, CPU burners, sleepers, huge files and fd
leaks. Each must be stopped by its limit with a message naming it, and must leave the host
and a neighbouring jail unharmed.
"""

import os
import resource
import time
import uuid
from pathlib import Path

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason
from tests.attacks.harness import (
    ATTACK_PIDS,
    FORK_BOMB,
    Neighbour,
    assert_blocked,
    attack_policy,
    died_of_signal,
    host_processes_matching,
    jail_python,
    stdout,
    text,
)

MIB = 1 << 20


def _marker() -> str:
    return f"cogbox-attack-{uuid.uuid4().hex}"


def _tree_bytes(path: Path) -> int:
    """Disk space (allocated blocks) used by the files under `path`, links not followed."""
    used = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            used += os.lstat(os.path.join(root, name)).st_blocks * 512
    return used


def test_fork_bomb_is_stopped_by_pids_limit(python_image: Image, neighbour: Neighbour) -> None:
    marker = _marker()
    result = jail_python(python_image, f"# {marker}\n" + FORK_BOMB)

    assert_blocked(result, "fork bomb", "BlockingIOError", 11)
    forked = int(stdout(result).split("FORKED ")[1].split()[0])
    assert forked < ATTACK_PIDS, text(result)
    assert result.exit.reason == ExitReason.PIDS_LIMIT, text(result)
    assert f"pids limit {ATTACK_PIDS}" in result.exit.message
    assert host_processes_matching(marker) == [], "forked children outlived the jail"
    neighbour.assert_answers()


def test_thread_bomb_is_stopped_by_pids_limit(python_image: Image) -> None:
    code = """
import threading, time
threads = []
def bomb():
    for _ in range(500):
        thread = threading.Thread(target=time.sleep, args=(30,), daemon=True)
        thread.start()
        threads.append(thread)
attempt("thread bomb", bomb)
print("THREADS %d" % len(threads))
sys.stdout.flush()
os._exit(3)
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "thread bomb", "RuntimeError", None)
    assert "can't start new thread" in stdout(result)
    assert int(stdout(result).split("THREADS ")[1].split()[0]) < ATTACK_PIDS


def test_memory_hog_is_killed_by_memory_limit(python_image: Image, neighbour: Neighbour) -> None:
    code = """
hoard = []
for step in range(64):  # up to 1 GiB against a 128 MiB limit
    hoard.append(b"x" * (16 << 20))  # filled, so the pages are really used
    print("HOLDING %d MiB" % (16 * len(hoard)))
    sys.stdout.flush()
print("SURVIVED")
"""
    result = jail_python(python_image, code)

    assert "SURVIVED" not in stdout(result), text(result)
    assert result.exit.reason == ExitReason.OOM, text(result)
    assert "out of memory" in result.exit.message and "128 MiB" in result.exit.message
    neighbour.assert_answers()


def test_workdir_disk_fill_stops_at_quota(
    python_image: Image, workdir: Path, neighbour: Neighbour
) -> None:
    code = """
written = [0]
def fill():
    for index in range(32):  # 8 MiB files (under the 16 MiB file size limit), 256 MiB max
        with open("/home/work/fill-%d" % index, "wb") as handle:
            for _ in range(8):
                handle.write(b"x" * (1 << 20))
                handle.flush()
                os.fsync(handle.fileno())
                written[0] += 1
error = attempt("fill /home/work", fill)
print("WROTE %d MiB" % written[0])
sys.stdout.flush()
raise error
"""
    result = jail_python(python_image, code, workdir=workdir)

    assert_blocked(result, "fill /home/work", "OSError", 28)  # ENOSPC
    assert int(stdout(result).split("WROTE ")[1].split()[0]) <= 32
    assert result.exit.reason == ExitReason.DISK_QUOTA, text(result)
    assert "/home/work" in result.exit.message and "32 MiB" in result.exit.message
    assert _tree_bytes(workdir) <= 32 * MIB, "more than the quota reached the host"
    neighbour.assert_answers()


def test_tmp_fill_stops_at_tmp_size(python_image: Image) -> None:
    code = """
written = [0]
def fill():
    for index in range(64):  # 4 MiB files (under the 16 MiB file size limit), 256 MiB max
        with open("/tmp/fill-%d" % index, "wb") as handle:
            for _ in range(4):
                handle.write(b"x" * (1 << 20))
                handle.flush()
                written[0] += 1
error = attempt("fill /tmp", fill)
print("WROTE %d MiB" % written[0])
sys.stdout.flush()
raise error
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "fill /tmp", "OSError", 28)
    assert int(stdout(result).split("WROTE ")[1].split()[0]) <= 16
    assert result.exit.reason == ExitReason.DISK_QUOTA, text(result)
    assert "/tmp 16 MiB" in result.exit.message


def test_dev_shm_fill_stops_at_shm_size(python_image: Image) -> None:
    code = """
written = [0]
def fill():
    with open("/dev/shm/fill", "wb") as handle:
        for _ in range(256):
            handle.write(b"x" * (1 << 20))
            handle.flush()
            written[0] += 1
attempt("fill /dev/shm", fill)
print("WROTE %d MiB" % written[0])
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "fill /dev/shm", "OSError", 28)
    assert int(stdout(result).split("WROTE ")[1].split()[0]) <= 8


def test_sparse_files_do_not_grow_past_workdir_quota_on_host(
    python_image: Image, workdir: Path
) -> None:
    # A sparse file takes no blocks in the jail's quota filesystem; copying it back to the
    # host must not write its holes out as real zeros (20 x 16 MiB against a 32 MiB quota).
    code = """
def make_sparse():
    for index in range(20):
        with open("/home/work/sparse-%d" % index, "wb") as handle:
            handle.truncate(16 << 20)
    return "20 sparse files of 16 MiB"
attempt("sparse files", make_sparse)
"""
    result = jail_python(python_image, code, workdir=workdir)

    assert result.exit.reason == ExitReason.EXITED, text(result)
    used = _tree_bytes(workdir)
    assert used <= 32 * MIB, f"the host wrote {used >> 20} MiB for a 32 MiB quota"


def test_output_flood_is_capped_and_stopped_by_wall_time(python_image: Image) -> None:
    code = """
chunk = "x" * 65536
for _ in range(10 ** 7):  # far more than the wall time allows
    sys.stdout.write(chunk)
"""
    policy = attack_policy(python_image, wall_time_seconds=3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = jail_python(python_image, code, policy=policy, output_limit=MIB)
    elapsed = time.monotonic() - started
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    assert len(result.stdout) <= MIB and result.truncated
    assert result.exit.reason == ExitReason.WALL_TIME, text(result)
    assert "wall time limit reached (3 s)" in result.exit.message
    assert elapsed < 15
    assert grown_kib < 64 * 1024, "the host buffered the flood"


def test_orphans_do_not_outlive_the_jail(python_image: Image) -> None:
    marker = _marker()
    code = f"""
# {marker}
import time
if os.fork() == 0:          # a daemon: double fork, new session, parent exits
    os.setsid()
    if os.fork() == 0:
        for _ in range(600):
            time.sleep(0.1)
        os._exit(0)
    os._exit(0)
time.sleep(0.3)
print("DAEMON STARTED")
"""
    result = jail_python(python_image, code)

    assert "DAEMON STARTED" in stdout(result), text(result)
    assert result.exit.reason == ExitReason.EXITED
    assert host_processes_matching(marker) == [], "an orphan kept running after the jail"


def test_exited_orphans_are_reaped_so_forks_keep_working(python_image: Image) -> None:
    # `sh -c "job &"` leaves orphans that exit later; they re-parent to the jail's init.
    # Unless init reaps them, their zombies fill the pids limit and the session can never
    # fork again.
    code = """
import time
for _ in range(64):  # twice the pids limit
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)  # the orphan: exits at once
        os._exit(0)
    os.waitpid(pid, 0)
time.sleep(0.3)
def pool_of_four():  # what multiprocessing.Pool(4) needs
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)
            os._exit(0)
        pids.append(pid)
    return [os.waitpid(pid, 0)[1] for pid in pids]
attempt("fork after orphans", pool_of_four)
"""
    result = jail_python(python_image, code)

    assert "ALLOWED fork after orphans: [0, 0, 0, 0]" in stdout(result), text(result)


def test_cpu_burner_is_stopped_by_cpu_time_limit(python_image: Image) -> None:
    code = """
print("BURNING")
sys.stdout.flush()
total = 0
for number in range(10 ** 10):
    total += number
print("FINISHED")
"""
    policy = attack_policy(python_image, cpu_time_seconds=1)
    started = time.monotonic()
    result = jail_python(python_image, code, policy=policy)
    elapsed = time.monotonic() - started

    assert "FINISHED" not in stdout(result)
    assert result.exit.reason == ExitReason.CPU_TIME, text(result)
    assert "CPU time limit reached (1 s per process)" in result.exit.message
    # SIGXCPU at the 1 s soft limit, not SIGKILL at the hard limit seconds later.
    assert died_of_signal(result, 24), f"ran {elapsed:.1f} s, then {result.exit!r}"
    assert elapsed < 4, f"a 1 s CPU time limit let the burner run {elapsed:.1f} s"


def test_sleeper_is_stopped_by_wall_time_limit(python_image: Image) -> None:
    code = """
import time
time.sleep(3600)
print("WOKE UP")
"""
    policy = attack_policy(python_image, wall_time_seconds=2)
    started = time.monotonic()
    result = jail_python(python_image, code, policy=policy)

    assert "WOKE UP" not in stdout(result)
    assert result.exit.reason == ExitReason.WALL_TIME, text(result)
    assert "wall time limit reached (2 s)" in result.exit.message
    assert time.monotonic() - started < 10


def test_huge_file_fails_with_efbig_at_file_size_limit(python_image: Image, workdir: Path) -> None:
    code = """
def write_big():
    with open("/home/work/big", "wb") as handle:
        for _ in range(24):  # 24 MiB against a 16 MiB file size limit
            handle.write(b"x" * (1 << 20))
            handle.flush()
error = attempt("huge file", write_big)
raise error
"""
    result = jail_python(python_image, code, workdir=workdir)

    assert_blocked(result, "huge file", "OSError", 27)  # EFBIG: "File too large"
    assert result.exit.reason == ExitReason.FILE_SIZE, text(result)
    assert "file size limit exceeded (16 MiB per file)" in result.exit.message
    assert (workdir / "big").stat().st_size <= 16 * MIB


def test_huge_file_writer_with_default_sigxfsz_is_killed(python_image: Image) -> None:
    # Python ignores SIGXFSZ; a C program does not. The writer is a child, not the jail's init.
    code = """
import signal
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    with open("/home/work/big", "wb") as handle:
        for _ in range(24):  # 24 MiB against a 16 MiB file size limit
            handle.write(b"x" * (1 << 20))
            handle.flush()
    os._exit(0)
status = os.waitpid(pid, 0)[1]
print("WRITER SIGNAL %d" % (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0))
print("FILE %d MiB" % (os.path.getsize("/home/work/big") >> 20))
"""
    result = jail_python(python_image, code)

    assert "WRITER SIGNAL 25" in stdout(result), text(result)  # SIGXFSZ
    assert "FILE 16 MiB" in stdout(result)


def test_fd_leak_is_capped_by_nofile_limit(python_image: Image) -> None:
    code = """
handles = []
def leak():
    for _ in range(10000):
        handles.append(open("/dev/null"))
attempt("open files", leak)
print("OPENED %d" % len(handles))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "open files", "OSError", 24)  # EMFILE
    assert "Too many open files" in stdout(result)
    assert int(stdout(result).split("OPENED ")[1].split()[0]) <= 64
