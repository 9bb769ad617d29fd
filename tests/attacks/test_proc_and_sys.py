"""Attack family: /proc and /sys leaks.

The jail has its own PID namespace and a fresh /proc; runc masks the files that leak host
memory, keys or timers (a /dev/null bind or an empty tmpfs; kernels without them, like this
VM's without /proc/kcore and /proc/sysrq-trigger, are also fine), and mounts /proc/sys,
/proc/sysrq-trigger and /sys read-only. Host processes, host kernel settings and the jail's
own cgroup limits must be out of reach.
"""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.attacks.harness import assert_blocked, jail_python, stdout, text

EROFS = 30

MASKED = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
          "/proc/latency_stats"]  # fmt: skip


@pytest.mark.parametrize("path", MASKED)
def test_masked_proc_file_reveals_nothing(python_image: Image, path: str) -> None:
    code = f"""
def read():
    with open({path!r}, "rb") as handle:
        return len(handle.read(1 << 16))
error = attempt("read", read)
"""
    result = jail_python(python_image, code)

    out = stdout(result)
    # Either masked (reads as empty) or absent / unreadable: never any content.
    assert "ALLOWED read: 0" in out or any(
        f"BLOCKED read: {kind}" in out for kind in ("FileNotFoundError", "PermissionError")
    ), text(result)


def test_sysrq_trigger_cannot_be_written(python_image: Image) -> None:
    result = jail_python(python_image, 'attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w"))')

    out = stdout(result)
    assert "ALLOWED sysrq" not in out
    # Read-only where the kernel has it (EROFS, or EACCES: it is root's, mode 0200).
    assert any(
        f"BLOCKED sysrq: {kind}" in out
        for kind in ("OSError [Errno 30]", "PermissionError [Errno 13]", "FileNotFoundError")
    ), text(result)


def test_sys_firmware_is_masked(python_image: Image) -> None:
    result = jail_python(python_image, 'print("FIRMWARE %s" % os.listdir("/sys/firmware"))')

    assert "FIRMWARE []" in stdout(result), text(result)


def test_kernel_settings_in_proc_sys_are_read_only(python_image: Image) -> None:
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    code = """
attempt("core_pattern",
        lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/home/work/pwn"))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "core_pattern", "OSError", EROFS)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_sys_is_read_only(python_image: Image) -> None:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not setting.exists():
        pytest.skip("this kernel has no transparent hugepage setting")
    before = setting.read_text()
    code = f'attempt("thp", lambda: open({str(setting)!r}, "w").write("never"))'
    result = jail_python(python_image, code)

    assert_blocked(result, "thp", "OSError", EROFS)
    assert setting.read_text() == before


def test_jail_cannot_raise_its_own_cgroup_limits(python_image: Image) -> None:
    code = """
for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max",
             "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
    attempt(path, lambda: open(path, "w").write("max"))
"""
    result = jail_python(python_image, code)

    out = stdout(result)
    assert "ALLOWED" not in out, text(result)
    assert out.count("BLOCKED") == 4


def test_host_processes_are_invisible(python_image: Image) -> None:
    marker = f"cogbox-attack-{uuid.uuid4().hex}"
    host_sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        # The marker is spelled backwards here, or the jail's own command line would hold it.
        code = f"""
marker = {marker[::-1]!r}[::-1].encode()
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("PIDS %s" % pids)
seen = 0
for pid in pids:
    try:
        seen += marker in open("/proc/%d/cmdline" % pid, "rb").read()
    except OSError:
        pass
print("HOST PROCESS SEEN %d" % seen)
print("MY PID %d" % os.getpid())
attempt("signal host pid", lambda: os.kill({host_sleeper.pid}, 0))
"""
        result = jail_python(python_image, code)
        out = stdout(result)
        assert "HOST PROCESS SEEN 0" in out, text(result)
        # Only the jail's init (PID 1) and the command itself are visible.
        my_pid = int(out.split("MY PID ")[1].split()[0])
        assert my_pid != 1 and f"PIDS [1, {my_pid}]" in out
        assert "ALLOWED signal host pid" not in out
        assert host_sleeper.poll() is None
    finally:
        host_sleeper.kill()
        host_sleeper.wait()
