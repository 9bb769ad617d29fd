"""Why a jail ended, in the user's words: from the exit status, cgroup counters and watchdog."""

import signal
from dataclasses import dataclass
from enum import StrEnum

from cogbox.jail.cgroups import CgroupCounters
from cogbox.jail.policy import Limits
from cogbox.sizes import format_size

# runc (like a shell) reports a process killed by signal N as exit status 128 + N.
SIGNAL_OFFSET = 128


class ExitReason(StrEnum):
    """What ended a jailed process. Every value but EXITED, SIGNALED, CRASHED and KILLED
    names a limit the jail enforced."""

    EXITED = "exited"  # the program ended on its own
    SIGNALED = "signaled"  # killed by a signal that no limit explains (or by the caller)
    CRASHED = "crashed"  # a fault of its own: segfault, bus error, abort, ...
    SYSCALL_BLOCKED = "syscall_blocked"  # seccomp killed it (SIGSYS): a forbidden ABI
    OOM = "oom"  # memory cgroup limit: the kernel's OOM killer
    PIDS_LIMIT = "pids_limit"  # pids cgroup limit: a fork or thread was refused
    CPU_TIME = "cpu_time"  # RLIMIT_CPU: SIGXCPU, then SIGKILL
    WALL_TIME = "wall_time"  # the launcher's watchdog
    FILE_SIZE = "file_size"  # RLIMIT_FSIZE: SIGXFSZ or EFBIG
    DISK_QUOTA = "disk_quota"  # /home/work's size-limited filesystem (or /tmp's) is full
    KILLED = "killed"  # the caller killed it (Jail.kill, cleanup)


@dataclass(frozen=True)
class JailExit:
    """How a jailed command ended. `message` is for the user: "killed: out of memory (...)"."""

    returncode: int  # as a shell reports it: 128 + N when killed by signal N
    reason: ExitReason
    message: str

    @property
    def signal(self) -> int | None:
        """The signal that killed the process, if the status says it was one."""
        number = self.returncode - SIGNAL_OFFSET
        return number if 0 < number < 65 else None

    @property
    def limit_hit(self) -> bool:
        return self.reason not in (
            ExitReason.EXITED,
            ExitReason.SIGNALED,
            ExitReason.CRASHED,
            ExitReason.KILLED,
        )


@dataclass(frozen=True)
class Evidence:
    """Everything the launcher observed about an ended jail, beyond the exit status."""

    counters: CgroupCounters | None = None
    wall_time_expired: float | None = None  # the wall limit (s) if the watchdog fired
    killed_by_caller: bool = False
    workdir_full: bool = False  # /home/work's quota filesystem had (almost) no space left
    stderr_tail: bytes = b""  # the end of stderr, when the caller captured it


def explain(returncode: int, limits: Limits, evidence: Evidence) -> JailExit:
    """Decide the reason for an exit and word it, naming the limit that was hit."""
    sig = returncode - SIGNAL_OFFSET if returncode > SIGNAL_OFFSET else None
    counters = evidence.counters
    failed = returncode != 0

    def ended(reason: ExitReason, message: str) -> JailExit:
        return JailExit(returncode, reason, message)

    if evidence.wall_time_expired is not None:
        return ended(
            ExitReason.WALL_TIME,
            f"killed: wall time limit reached ({_seconds(evidence.wall_time_expired)})",
        )
    if evidence.killed_by_caller:
        return ended(ExitReason.KILLED, "killed: stopped by the caller")
    # v2 counts OOM kills on the parent; v1 only says the limit was hit, and the SIGKILL
    # that follows is the OOM killer's (nothing else in the jail may send SIGKILL to init).
    if counters is not None and (
        counters.oom_kills > 0 or (sig == signal.SIGKILL and counters.memory_limit_hits > 0)
    ):
        slurm_limit = counters.slurm_memory_limit_bytes
        limit = (
            f"the Slurm job's memory limit {_size(slurm_limit)}"
            if slurm_limit is not None
            else f"memory limit {_size(limits.memory_bytes)}"
        )
        return ended(ExitReason.OOM, f"killed: out of memory ({limit})")
    # SIGXCPU at the soft limit; a process that ignores it gets SIGKILL at the hard one.
    if limits.cpu_time_seconds is not None and sig in (signal.SIGXCPU, signal.SIGKILL):
        return ended(
            ExitReason.CPU_TIME,
            f"killed: CPU time limit reached ({limits.cpu_time_seconds} s per process)",
        )
    if sig == signal.SIGXFSZ or (failed and _mentions(evidence, b"File too large")):
        return ended(
            ExitReason.FILE_SIZE,
            f"stopped: file size limit exceeded ({_size(limits.fsize_bytes)} per file)",
        )
    if failed and evidence.workdir_full:
        return ended(
            ExitReason.DISK_QUOTA,
            f"stopped: disk quota of /home/work is full ({_size(limits.workdir_quota_bytes)})",
        )
    if failed and _mentions(evidence, b"No space left on device"):
        return ended(
            ExitReason.DISK_QUOTA,
            f"stopped: a filesystem is full (/home/work quota "
            f"{_size(limits.workdir_quota_bytes)}, /tmp {_size(limits.tmp_size_bytes)})",
        )
    if failed and counters is not None and _pids_limit_hit(counters, limits.pids):
        return ended(
            ExitReason.PIDS_LIMIT,
            f"stopped: process limit reached, a fork failed (pids limit {limits.pids})",
        )
    if sig == signal.SIGSYS:
        return ended(
            ExitReason.SYSCALL_BLOCKED,
            "killed by the jail's syscall filter: it made a system call its policy forbids "
            f"(signal {sig}, SIGSYS)",
        )
    if sig in _CRASHES:
        what = (signal.strsignal(sig) or "a fault").lower()
        return ended(ExitReason.CRASHED, f"crashed: {what} (signal {sig}, {_signal_name(sig)})")
    if sig is not None and 0 < sig < 65:
        name = _signal_name(sig)
        return ended(ExitReason.SIGNALED, f"killed by signal {sig} ({name})")
    return ended(ExitReason.EXITED, f"exited with status {returncode}")


def _pids_limit_hit(counters: CgroupCounters, limit: int) -> bool:
    if counters.pids_limit_hits > 0:
        return True
    return counters.pids_peak is not None and counters.pids_peak >= limit


def _mentions(evidence: Evidence, needle: bytes) -> bool:
    return needle in evidence.stderr_tail


# Signals a program gets for its own faults (the ones that dump core).
_CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def _size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    if value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    return format_size(value)


def _seconds(value: float) -> str:
    return f"{value:g} s"
