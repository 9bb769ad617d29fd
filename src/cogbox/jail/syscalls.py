"""The jail's built-in syscall knowledge: default whitelist, refused names, argument rules."""

from collections.abc import Mapping
from functools import cache
from typing import Any

# Docker/moby's default seccomp allow-list (profiles/seccomp/default.json), reduced to the
# names that exist on x86_64 (the only ABI the jail admits) and to what is allowed without
# capabilities, minus io_uring (its queued operations never pass through seccomp).
# clone, socket, socketpair and personality are here too, but are only ever rendered with
# the argument checks in this module.
_DOCKER_X86_64 = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown clock_adjtime
clock_getres clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup
dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fallocate fanotify_mark fchdir fchmod fchmodat fchown fchownat fcntl fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv
futimesat getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
io_destroy io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat
listen listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat
openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll
ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg
sendmsg sendto setfsgid setfsuid setgid setgroups setitimer setpgid setpriority setregid
setresgid setresuid setreuid setrlimit set_robust_list setsid setsockopt set_thread_area
set_tid_address setuid setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 socketpair splice stat statfs statx symlink symlinkat sync sync_file_range syncfs
sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_settime
timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink unlinkat
utime utimensat utimes vfork vmsplice wait4 waitid write writev
arch_prctl clone personality socket
"""

# Added to Docker's list: newer calls that glibc and runtimes use with a fallback only on
# ENOSYS (so EPERM would break them), and one read-only NUMA query that hwloc (linked by
# CNTK through OpenMPI) makes; Docker only allows it bundled with mbind under CAP_SYS_NICE.
_ADDED = "cachestat fchmodat2 futex_requeue futex_wait futex_wake get_mempolicy map_shadow_stack"

DEFAULT_ALLOWED_SYSCALLS: frozenset[str] = frozenset((_DOCKER_X86_64 + _ADDED).split())

_REASONS: dict[str, tuple[str, ...]] = {
    "io_uring operations run inside the kernel without passing through seccomp, "
    "so allowing them would bypass this whitelist": (
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
    ),
    "clone3 is always answered with ENOSYS: its flags sit in memory that seccomp cannot "
    "read, and on ENOSYS glibc falls back to clone, whose flags the jail checks": ("clone3",),
    "new or joined namespaces (above all user namespaces) give sandboxed code root powers "
    "over large parts of the kernel; the launcher sets up the jail's namespaces": (
        "setns",
        "unshare",
    ),
    "the jail's filesystem view is fixed by the launcher; changing mounts or the root "
    "needs CAP_SYS_ADMIN, which the jail drops": (
        "chroot",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "pivot_root",
        "umount2",
    ),
    "kernel keyrings are not namespaced: they would be a channel between sandboxes and "
    "can expose the host's keys": ("add_key", "keyctl", "request_key"),
    "loads programs into the kernel (a frequent exploit path)": ("bpf",),
    "host-wide performance counters: a side channel and a frequent exploit target": (
        "perf_event_open",
    ),
    "lets code stall the kernel in the middle of a copy, a standard exploit primitive": (
        "userfaultfd",
    ),
    "opens files by handle and so escapes the mount view (the 'shocker' container escape)": (
        "open_by_handle_at",
    ),
    "reads or changes other processes' memory or files; a debugger inside the jail is "
    "not supported": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    "administers the whole host (and needs capabilities the jail drops)": (
        "acct",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "init_module",
        "ioperm",
        "iopl",
        "kexec_file_load",
        "kexec_load",
        "lookup_dcookie",
        "nfsservctl",
        "query_module",
        "quotactl",
        "quotactl_fd",
        "reboot",
        "setdomainname",
        "sethostname",
        "settimeofday",
        "swapoff",
        "swapon",
        "syslog",
        "uselib",
        "vhangup",
        "_sysctl",
    ),
}

# Names a policy may not allow, with the reason shown to the policy's author.
FORBIDDEN_SYSCALLS: Mapping[str, str] = {
    name: reason for reason, names in _REASONS.items() for name in names
}

ERRNO_EPERM = 1
ERRNO_ENOSYS = 38

# clone flags that create namespaces (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET),
# the same mask Docker uses; clone is allowed only with all of them clear.
CLONE_NAMESPACE_FLAGS = 0x7E020000
CLONE_THREAD = 0x00010000

# socket() is allowed for these address families only: AF_UNIX (ipykernel/zeromq ipc),
# AF_INET/AF_INET6 (loopback, or the network when it is opted in) and AF_NETLINK (glibc's
# getaddrinfo asks NETLINK_ROUTE for local addresses). Everything else is denied, among them
# AF_PACKET (17), AF_ALG (38) and AF_VSOCK (40).
SOCKET_FAMILIES: Mapping[str, int] = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}
SOCKETPAIR_FAMILIES: Mapping[str, int] = {"AF_UNIX": 1}

# personality() values Docker allows: query (0xffffffff), PER_LINUX, PER_LINUX32 and their
# UNAME26 variants; the rest (e.g. READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE) are denied.
PERSONALITY_VALUES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Names the renderer always emits with argument checks rather than as plain allows.
ARGUMENT_CHECKED = frozenset({"clone", "personality", "socket", "socketpair"})

# Path-taking chmod calls: sent to the launcher's chmod guard (SCMP_ACT_NOTIFY) when OP_CHMOD
# narrows where chmod works. fchmod takes an fd, not a path, and is left to file ownership.
# fchmodat2 (Linux 6.6) is known to Debian 12's libseccomp 2.5.4-1+deb12u1 (as 452).
CHMOD_SYSCALLS = frozenset({"chmod", "fchmodat", "fchmodat2"})


@cache
def _libseccomp() -> Any:
    # Imported lazily: the rest of cogbox (and its CLI) must load on hosts without
    # libseccomp; only checking syscall names needs it.
    import pyseccomp

    return pyseccomp


def syscall_number(name: str) -> int:
    """The x86_64 number of `name` as libseccomp resolves it: -1 if unknown, < -1 if not x86_64.

    Raises OSError when libseccomp itself cannot be loaded.
    """
    try:
        seccomp = _libseccomp()
    except (ImportError, OSError, RuntimeError) as exc:  # pyseccomp raises on a missing lib
        raise OSError(f"libseccomp is needed to check syscall names: {exc}") from exc
    number: int = seccomp.resolve_syscall(seccomp.Arch.X86_64, name)
    return number


def syscall_name_problem(name: str) -> str | None:
    """Why `name` cannot be in a policy's allowed_syscalls, or None if it can."""
    if name in FORBIDDEN_SYSCALLS:
        return f"{name} is never allowed: {FORBIDDEN_SYSCALLS[name]}"
    number = syscall_number(name)
    if number == -1:
        return (
            f"{name} is not a syscall libseccomp knows (a typo, or newer than this host's "
            "libseccomp); runc would silently drop it, so it is refused here"
        )
    if number < 0:
        return f"{name} is not a syscall on x86_64, the only architecture the jail admits"
    return None
