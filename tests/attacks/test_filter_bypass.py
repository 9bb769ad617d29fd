"""Attack family: seccomp filter bypass.

A whitelist keyed on x86_64 syscall numbers is bypassed if the same kernel entry points can
be reached under other numbers: the i386 ABI (`int 0x80` from a 64-bit process) and the x32
ABI (numbers with bit 0x40000000). The filter admits the x86_64 ABI only, so either is
killed with SIGSYS. Also here: flags that make clone() create namespaces (the argument check
on clone), and stacking a permissive filter of one's own on top of the jail's.
"""

import os
import shutil
import subprocess

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason, JailResult
from tests.attacks.harness import PRELUDE, assert_blocked, died_of_signal, jail_python, stdout, text

SIGSYS = 31
EPERM = 1

# Machine code on an mmap'd executable page: `push rbx; mov eax, NR; mov ebx, ARG;
# int 0x80; pop rbx; ret`, returning eax (the i386 syscall's result).
INT80 = """
import mmap, struct
def int80(number, ebx=0):
    code = (b"\\x53" + b"\\xb8" + struct.pack("<I", number) + b"\\xbb" + struct.pack("<I", ebx)
            + b"\\xcd\\x80" + b"\\x5b" + b"\\xc3")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    result = ctypes.CFUNCTYPE(ctypes.c_int)(address)()
    if result < 0:
        raise OSError(-result, os.strerror(-result))
    return result
print("TRYING")
sys.stdout.flush()
"""


def _assert_killed_by_sigsys_before(result: JailResult, name: str) -> None:
    assert "TRYING" in stdout(result), text(result)
    assert f"ALLOWED {name}" not in stdout(result), text(result)
    assert died_of_signal(result, SIGSYS), text(result)
    assert result.exit.reason == ExitReason.SYSCALL_BLOCKED
    assert "syscall filter" in result.exit.message and "SIGSYS" in result.exit.message


def test_int80_works_outside_the_jail_as_a_control() -> None:
    # Shows the i386 attack code below is sound: unjailed, int 0x80 getpid returns the pid.
    python = "/usr/bin/python3"
    if not os.path.exists(python) or shutil.which("setpriv") is None:
        pytest.skip("needs the host's /usr/bin/python3 and setpriv")
    script = PRELUDE + INT80 + 'attempt("i386 getpid", lambda: int80(20))\n'
    done = subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", python, "-c", script],
        capture_output=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert b"ALLOWED i386 getpid:" in done.stdout, done.stdout + done.stderr


def test_i386_int80_syscall_is_killed_with_sigsys(python_image: Image) -> None:
    code = INT80 + 'attempt("i386 getpid", lambda: int80(20))\n'
    result = jail_python(python_image, code)

    _assert_killed_by_sigsys_before(result, "i386 getpid")


def test_i386_int80_unshare_does_not_bypass_the_whitelist(python_image: Image) -> None:
    code = INT80 + 'attempt("i386 unshare", lambda: int80(310, 0x10000000))\n'  # CLONE_NEWUSER
    result = jail_python(python_image, code)

    _assert_killed_by_sigsys_before(result, "i386 unshare")


def test_x32_syscall_number_is_killed_with_sigsys(python_image: Image) -> None:
    code = """
print("TRYING")
sys.stdout.flush()
attempt("x32 getpid", lambda: raw_syscall(39 | 0x40000000))
"""
    result = jail_python(python_image, code)

    _assert_killed_by_sigsys_before(result, "x32 getpid")


def test_x32_unshare_does_not_bypass_the_whitelist(python_image: Image) -> None:
    code = """
print("TRYING")
sys.stdout.flush()
attempt("x32 unshare", lambda: raw_syscall(272 | 0x40000000, 0x10000000))
"""
    result = jail_python(python_image, code)

    _assert_killed_by_sigsys_before(result, "x32 unshare")


@pytest.mark.parametrize(
    ("flag_name", "flag"),
    [("CLONE_NEWUSER", 0x10000000), ("CLONE_NEWNET", 0x40000000), ("CLONE_NEWNS", 0x00020000)],
    ids=["CLONE_NEWUSER", "CLONE_NEWNET", "CLONE_NEWNS"],
)
def test_clone_with_namespace_flags_fails_with_eperm(
    python_image: Image, flag_name: str, flag: int
) -> None:
    # A raw clone() without CLONE_VM behaves like fork(); the child leaves at once if created.
    code = f"""
def clone_ns():
    pid = raw_syscall(56, {flag} | 17, 0, 0, 0, 0)  # | SIGCHLD
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
attempt("clone {flag_name}", clone_ns)
"""
    result = jail_python(python_image, code)

    assert_blocked(result, f"clone {flag_name}", "PermissionError", EPERM)


def test_stacking_a_permissive_filter_does_not_lift_the_jail_filter(python_image: Image) -> None:
    # seccomp filters stack and the strictest answer wins; an allow-all filter of our own
    # (allowed: no_new_privs is set) must not make unshare(CLONE_NEWUSER) work.
    code = """
class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]
allow_all = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0x7fff0000))  # BPF_RET|BPF_K, ALLOW
program = SockFprog(1, allow_all)
attempt("install allow-all filter",
        lambda: raw_syscall(157, 22, 2, ctypes.addressof(program)))  # prctl(PR_SET_SECCOMP)
attempt("unshare after stacking", lambda: raw_syscall(272, 0x10000000))
print("FILTERS %s" % [l for l in open("/proc/self/status") if l.startswith("Seccomp_filters")])
"""
    result = jail_python(python_image, code)

    assert "ALLOWED install allow-all filter" in stdout(result), text(result)
    assert_blocked(result, "unshare after stacking", "PermissionError", EPERM)
