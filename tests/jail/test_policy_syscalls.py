"""allowed_syscalls: names are checked against libseccomp, and jail-breaking ones are refused."""

import pytest

from cogbox.jail import syscalls
from cogbox.jail.policy import PolicyError, parse_policy
from cogbox.jail.syscalls import DEFAULT_ALLOWED_SYSCALLS, FORBIDDEN_SYSCALLS, syscall_number

DANGEROUS = [
    "ptrace",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "kexec_load",
    "reboot",
    "swapon",
    "pivot_root",
    "chroot",
    "acct",
    "quotactl",
    "process_vm_readv",
    "process_vm_writev",
    "clone3",
]

# What Python, numpy/OpenMP, CNTK and ipykernel/zeromq need to run.
NEEDED_BY_PYTHON_KERNELS = [
    "clone",
    "futex",
    "set_robust_list",
    "rseq",
    "mmap",
    "mprotect",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "eventfd2",
    "socket",
    "socketpair",
    "getrandom",
    "sched_getaffinity",
    "sched_yield",
    "openat",
    "newfstatat",
    "statx",
    "execve",
    "wait4",
    "pipe2",
    "prlimit64",
    "arch_prctl",
]


def problem(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yml")
    return str(caught.value)


def test_unknown_syscall_name_is_an_error_naming_line_and_name() -> None:
    message = problem("diff_to_default: true\nallowed_syscalls:\n  - read\n  - raed\n")
    assert "policy.yml:4: allowed_syscalls[1]: raed is not a syscall libseccomp knows" in message


def test_name_newer_than_libseccomp_is_an_error_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libseccomp resolves names it does not know to -1 (__NR_SCMP_ERROR).
    monkeypatch.setattr(syscalls, "syscall_number", lambda name: -1)
    assert "mseal is not a syscall libseccomp knows" in problem("allowed_syscalls: [mseal]")


def test_syscall_of_another_architecture_is_an_error() -> None:
    assert "socketcall is not a syscall on x86_64" in problem("allowed_syscalls: [socketcall]")


@pytest.mark.parametrize("name", DANGEROUS)
def test_dangerous_syscall_cannot_be_allowed(name: str) -> None:
    assert f"allowed_syscalls[0]: {name} is never allowed" in problem(f"allowed_syscalls: [{name}]")


def test_every_default_syscall_exists_on_x86_64() -> None:
    assert [name for name in DEFAULT_ALLOWED_SYSCALLS if syscall_number(name) < 0] == []


def test_every_refused_syscall_exists_on_x86_64() -> None:
    assert [name for name in FORBIDDEN_SYSCALLS if syscall_number(name) < 0] == []


@pytest.mark.parametrize("name", DANGEROUS)
def test_default_whitelist_excludes_dangerous_syscall(name: str) -> None:
    assert name not in DEFAULT_ALLOWED_SYSCALLS


def test_default_whitelist_keeps_what_python_kernels_need() -> None:
    assert set(NEEDED_BY_PYTHON_KERNELS) <= DEFAULT_ALLOWED_SYSCALLS
