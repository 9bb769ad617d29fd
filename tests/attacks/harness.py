"""The attack suite's harness: run hostile Python in a jail with small limits, and neighbours.

Every attack script gets `PRELUDE` first. Its `attempt(name, fn)` prints one line per attack:

    BLOCKED ptrace: PermissionError [Errno 1] Operation not permitted
    ALLOWED ptrace: 0

so a test asserts on what the user would read. The prelude runs on Python 2.7 (cntk image)
and 3.11 (python image), so it sticks to the common subset of both.
"""

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cogbox.images.store import Image
from cogbox.jail.bundle import state_dirs
from cogbox.jail.launcher import DEVNULL, Jail, JailResult, JailSpec, run_jailed
from cogbox.jail.policy import Policy, parse_policy

# Small limits keep the whole suite fast on 2 cores and make each limit easy to hit.
ATTACK_LIMITS: Mapping[str, Any] = {
    "memory": "128m",
    "cpus": 1,
    "nofile": 64,
    "file_size": "16m",
    "workdir_quota": "32m",
    "tmp_size": "16m",
    "shm_size": "8m",
    "cpu_time_seconds": "unlimited",
    "wall_time_seconds": 10,
}
ATTACK_PIDS = 32
# How long the test waits for any one attack; the policy's wall time should end it first.
HOST_TIMEOUT = 30.0

PRELUDE = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def _arg(value):
    if isinstance(value, bool) or value is None:
        return ctypes.c_void_p(None) if value is None else ctypes.c_long(int(value))
    if isinstance(value, int):
        return ctypes.c_long(value)
    return value

def raw_syscall(number, *args):
    '''libc syscall(2); raises OSError (PermissionError for EPERM on Python 3) on -1.'''
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[_arg(a) for a in args])
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result

def attempt(name, fn):
    '''Run one attack; print BLOCKED (with the exception the user sees) or ALLOWED.'''
    try:
        result = fn()
    except Exception as exc:
        print("BLOCKED %s: %s %s" % (name, type(exc).__name__, exc))
        sys.stdout.flush()
        return exc
    print("ALLOWED %s: %r" % (name, result))
    sys.stdout.flush()
    return None
"""

PYTHON3 = "/usr/bin/python3"
PYTHON2 = "/usr/bin/python2.7"


# Forks sleeping children until fork fails; prints how many it made, then the error.
FORK_BOMB = """
import time
children = []
def bomb():
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
error = attempt("fork bomb", bomb)
print("FORKED %d" % len(children))
sys.stdout.flush()
raise error
"""


def attack_policy(image: Image, *, pids: int = ATTACK_PIDS, **limits: Any) -> Policy:
    """The image's own policy with the suite's small limits (and `limits` on top of them)."""
    document = yaml.safe_load(image.policy_path.read_text()) or {}
    document.setdefault("limits", {})
    document["limits"].update(ATTACK_LIMITS)
    document["limits"].update(limits)
    # max_child_procs and limits.pids set the same cgroup limit; the policy allows only one.
    document["limits"].pop("pids", None)
    document["max_child_procs"] = pids
    return parse_policy(yaml.safe_dump(document), source=f"attack policy for {image.name}")


def interpreter(image: Image) -> str:
    return PYTHON2 if (image.rootfs / PYTHON2.lstrip("/")).exists() else PYTHON3


def python_spec(
    image: Image,
    code: str,
    *,
    policy: Policy | None = None,
    workdir: Path | None = None,
    env: Mapping[str, str] | None = None,
    binds: Sequence[Any] = (),
    prelude: bool = True,
) -> JailSpec:
    """A JailSpec running `code` (after PRELUDE) with the image's interpreter."""
    script = (PRELUDE + "\n" + code) if prelude else code
    return JailSpec(
        image=image,
        policy=policy or attack_policy(image),
        argv=[interpreter(image), "-c", script],
        workdir=workdir,
        env=dict(env or {}),
        binds=list(binds),
    )


def jail_python(
    image: Image,
    code: str,
    *,
    policy: Policy | None = None,
    workdir: Path | None = None,
    env: Mapping[str, str] | None = None,
    binds: Sequence[Any] = (),
    input: bytes | None = None,
    timeout: float = HOST_TIMEOUT,
    output_limit: int = 1 << 20,
    prelude: bool = True,
) -> JailResult:
    """Run `code` in a jail of `image` (small attack limits unless `policy` is given)."""
    spec = python_spec(
        image, code, policy=policy, workdir=workdir, env=env, binds=binds, prelude=prelude
    )
    return run_jailed(spec, input=input, timeout=timeout, output_limit=output_limit)


def text(result: JailResult) -> str:
    """stdout and stderr together, for messages when an assertion fails."""
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    return f"exit={result.exit!r}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"


def stdout(result: JailResult) -> str:
    return result.stdout.decode(errors="replace")


def assert_blocked(result: JailResult, name: str, exception: str, errno_: int | None) -> str:
    """The attack `name` printed BLOCKED with `exception` (and `[Errno errno_]`); returns it."""
    out = stdout(result)
    assert f"ALLOWED {name}:" not in out, text(result)
    match = re.search(rf"^BLOCKED {re.escape(name)}: (.*)$", out, re.MULTILINE)
    assert match, f"attack {name!r} printed no BLOCKED line\n{text(result)}"
    line = match.group(1)
    assert line.startswith(exception + " "), f"{name}: expected {exception}, got {line}"
    if errno_ is not None:
        assert f"[Errno {errno_}]" in line, f"{name}: expected errno {errno_}, got {line}"
    return line


def died_of_signal(result: JailResult, signum: int) -> bool:
    """Whether the jailed program was killed by `signum` (as -N or as the shell's 128+N)."""
    return result.exit.returncode in (-signum, 128 + signum)


def host_processes_matching(marker: str) -> list[int]:
    """Host PIDs whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------- neighbour

NEIGHBOUR_CANARY = "the neighbour's own data"
_HEARTBEAT = f"""
import os, time
with open('/home/work/canary', 'w') as handle:
    handle.write({NEIGHBOUR_CANARY!r})
for beat in range(1, 100000):  # bounded: the policy's wall time ends it long before
    with open('/home/work/heartbeat.tmp', 'w') as handle:
        handle.write(str(beat))
    os.rename('/home/work/heartbeat.tmp', '/home/work/heartbeat')
    time.sleep(0.05)
"""


class Neighbour:
    """A second jail running next to an attack; it must still answer when the attack ends."""

    def __init__(self, image: Image) -> None:
        # It lives through a whole test module: wall time long enough for the slowest one.
        policy = attack_policy(image, wall_time_seconds=1800)
        self.jail = Jail()
        self.jail.start(
            python_spec(image, _HEARTBEAT, policy=policy), stdout=DEVNULL, stderr=DEVNULL
        )
        self._wait_for_first_beat()

    def beat(self) -> int:
        view = self.jail.workdir_view  # the live /home/work (a quota filesystem)
        try:
            return int((view / "heartbeat").read_text() or 0) if view else 0
        except (OSError, ValueError):
            return 0

    def _wait_for_first_beat(self) -> None:
        deadline = time.monotonic() + 20
        while self.beat() == 0:
            if self.jail.poll() is not None:
                raise AssertionError(f"neighbour jail exited at start: {self.jail.wait()!r}")
            if time.monotonic() > deadline:
                raise AssertionError("neighbour jail never wrote a heartbeat")
            time.sleep(0.05)

    def assert_answers(self) -> None:
        """Still running, its files intact, and its heartbeat still moves (within 3 s)."""
        assert self.jail.poll() is None, f"the neighbour jail died: {self.jail.wait()!r}"
        view = self.jail.workdir_view
        assert view is not None and (view / "canary").read_text() == NEIGHBOUR_CANARY
        first = self.beat()
        deadline = time.monotonic() + 3
        while self.beat() <= first:
            assert time.monotonic() < deadline, "the neighbour jail stopped making progress"
            time.sleep(0.05)

    def stop(self) -> None:
        self.jail.cleanup()


# ---------------------------------------------------------------------------- the host

# Host files an escaped attack would most want to read or change.
HOST_FILES = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hosts", "/etc/ld.so.preload"]


class HostCanary:
    """The host's state an attack must leave alone: key files (content, mode, owner), a
    canary file only root may write, and no process left running from a jail."""

    def __init__(self, folder: Path) -> None:
        self.canary = folder / "host-canary"
        self.canary.write_text("the host's own data")
        self.canary.chmod(0o644)
        self._before = self._snapshot()

    def _snapshot(self) -> dict[str, tuple[bytes, int, int, int] | None]:
        state: dict[str, tuple[bytes, int, int, int] | None] = {}
        for name in [*HOST_FILES, str(self.canary)]:
            try:
                info = os.stat(name)
                state[name] = (Path(name).read_bytes(), info.st_mode, info.st_uid, info.st_gid)
            except FileNotFoundError:
                state[name] = None
        return state

    def assert_unchanged(self) -> None:
        changed = [name for name, seen in self._snapshot().items() if seen != self._before[name]]
        assert not changed, f"the attack changed host files: {changed}"


_JAIL_CGROUP = re.compile(r"/(cogbox-[A-Za-z0-9._-]+)/")


def running_jails() -> set[str]:
    """The ids of the jails that have a process on the host now (from /proc/*/cgroup)."""
    found: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found.update(_JAIL_CGROUP.findall((entry / "cgroup").read_text()))
        except OSError:
            continue
    return found


def driven_by_other_processes(jail_ids: set[str]) -> set[str]:
    """The jails among `jail_ids` whose bundle says a live process other than this one drives
    them: other test runs' jails on a shared host, not leftovers of this one's cases."""
    others: set[str] = set()
    _, jails_dir = state_dirs()
    for jail_id in jail_ids:
        try:
            record = json.loads((jails_dir / jail_id / "driver.json").read_text())
            # A kernel's driver is its monitor; the process it works for is its owner.
            pid = int(record.get("owner", record["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no bundle (cleaned up, or ours): count it
        if pid != os.getpid() and Path(f"/proc/{pid}").exists():
            others.add(jail_id)
    return others
