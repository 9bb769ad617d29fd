"""Attack family: dangerous syscalls.

Kernel interfaces that sandboxed code has used to escape or to attack the host: debugging
other processes, mounts and namespaces, keyrings, eBPF, perf, userfaultfd, io_uring, module
loading, open_by_handle_at ("shocker"), kexec, reboot, swap, changing the root. The seccomp
whitelist answers each with EPERM before the kernel looks at its arguments (most would
otherwise succeed for an unprivileged user: TRACEME, a user namespace, a key, io_uring).
clone3 is the exception: ENOSYS, so that glibc falls back to clone and threads still start.
"""

from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.attacks.harness import assert_blocked, jail_python, stdout, text

EPERM = 1
ENOSYS = 38

# name -> Python (after the prelude) that makes the call through libc's syscall(2).
DANGEROUS_CALLS = {
    "ptrace": "raw_syscall(101, 0, 0, 0, 0)",  # PTRACE_TRACEME: allowed to anyone normally
    "mount": 'raw_syscall(165, b"none", b"/tmp", b"tmpfs", 0, None)',
    "umount2": 'raw_syscall(166, b"/proc", 2)',  # MNT_DETACH
    "unshare": "raw_syscall(272, 0x10000000)",  # CLONE_NEWUSER: root in a new namespace
    "setns": 'raw_syscall(308, os.open("/proc/1/ns/net", os.O_RDONLY), 0)',
    "keyctl": "raw_syscall(250, 0, -3, 1)",  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": 'raw_syscall(248, b"user", b"cogbox-attack", b"secret", 6, -2)',
    "request_key": 'raw_syscall(249, b"user", b"cogbox-attack", None, -2)',
    "bpf": "raw_syscall(321, 0, ctypes.create_string_buffer(128), 128)",  # BPF_MAP_CREATE
    "perf_event_open": (
        "raw_syscall(298, ctypes.create_string_buffer(b'\\x01\\x00\\x00\\x00\\x80', 128), "
        "0, -1, -1, 0)"
    ),
    "userfaultfd": "raw_syscall(323, os.O_CLOEXEC)",
    "io_uring_setup": "raw_syscall(425, 8, ctypes.create_string_buffer(120))",
    "init_module": 'raw_syscall(175, ctypes.create_string_buffer(128), 128, b"")',
    "finit_module": 'raw_syscall(313, os.open("/usr/bin/python3", os.O_RDONLY), b"", 0)',
    "delete_module": 'raw_syscall(176, b"ext4", 0)',
    "open_by_handle_at": (
        "raw_syscall(304, os.open('/', os.O_RDONLY), "
        "ctypes.create_string_buffer(b'\\x80\\x00\\x00\\x00\\x01', 136), 0)"
    ),
    "kexec_load": "raw_syscall(246, 0, 0, None, 0)",
    "kexec_file_load": 'raw_syscall(320, os.open("/usr/bin/python3", os.O_RDONLY), -1, 0, None, 0)',
    "reboot": "raw_syscall(169, 0xfee1dead, 672274793, 0, None)",  # LINUX_REBOOT_CMD_CAD_OFF
    "swapon": 'raw_syscall(167, b"/tmp/swap", 0)',
    "pivot_root": 'raw_syscall(155, b"/tmp", b"/tmp")',
    "chroot": 'os.chroot("/tmp")',
    "syslog": "raw_syscall(103, 10, None, 0)",  # SYSLOG_ACTION_SIZE_BUFFER (dmesg)
    "process_vm_readv": "raw_syscall(310, 1, None, 0, None, 0, 0)",
    "iopl": "raw_syscall(172, 3)",
    "sethostname": 'raw_syscall(170, b"pwned", 5)',
}


@pytest.mark.parametrize("name", sorted(DANGEROUS_CALLS))
def test_dangerous_syscall_fails_with_eperm(python_image: Image, name: str) -> None:
    result = jail_python(python_image, f"attempt({name!r}, lambda: {DANGEROUS_CALLS[name]})")

    assert_blocked(result, name, "PermissionError", EPERM)


def test_user_namespace_is_not_created_by_unshare(python_image: Image) -> None:
    code = """
before = open("/proc/self/uid_map").read()
attempt("unshare", lambda: raw_syscall(272, 0x10000000))
print("UID_MAP_SAME %s" % (open("/proc/self/uid_map").read() == before))
print("NS_UID %d" % os.getuid())
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "unshare", "PermissionError", EPERM)
    assert "UID_MAP_SAME True" in stdout(result) and "NS_UID 1000" in stdout(result)


def _key_users(uid: int) -> str:
    for line in Path("/proc/key-users").read_text().splitlines():
        if line.split(":")[0].strip() == str(uid):
            return line
    return ""


def test_add_key_reaches_no_keyring_on_the_host(python_image: Image) -> None:
    before = _key_users(1000)
    code = 'attempt("add_key", lambda: raw_syscall(248, b"user", b"cogbox", b"x", 1, -4))'
    result = jail_python(python_image, code)  # -4: KEY_SPEC_USER_KEYRING, shared by uid

    assert_blocked(result, "add_key", "PermissionError", EPERM)
    assert _key_users(1000) == before, "the jail added a key to uid 1000's host keyring"


def test_clone3_fails_with_enosys_and_threads_still_start(python_image: Image) -> None:
    code = """
import threading
attempt("clone3", lambda: raw_syscall(435, None, 0))
results = []
threads = [threading.Thread(target=results.append, args=(n,)) for n in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("THREADS RAN %d" % len(results))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "clone3", "OSError", ENOSYS)
    assert "Function not implemented" in stdout(result)
    assert "THREADS RAN 4" in stdout(result), text(result)


def test_personality_tricks_are_refused_but_the_query_works(python_image: Image) -> None:
    code = """
attempt("READ_IMPLIES_EXEC", lambda: raw_syscall(135, 0x0400000))
attempt("ADDR_NO_RANDOMIZE", lambda: raw_syscall(135, 0x0040000))
attempt("query", lambda: raw_syscall(135, 0xffffffff))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "READ_IMPLIES_EXEC", "PermissionError", EPERM)
    assert_blocked(result, "ADDR_NO_RANDOMIZE", "PermissionError", EPERM)
    assert "ALLOWED query: 0" in stdout(result), text(result)
