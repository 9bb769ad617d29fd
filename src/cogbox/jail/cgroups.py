"""Per-jail cgroups the launcher owns, on cgroup v1 or v2, whose counters outlive the container.

runc removes the container's own cgroup as soon as the container exits, taking the OOM and
pids counters with it. So the launcher creates a parent cgroup per jail, puts the memory and
pids limits there, and gives runc a leaf beneath it (`<parent>/jail`). The leaf's charges
count against the parent's limits, the parent's counters survive runc's cleanup, and the
launcher reads them before removing the parent.

    v2:  <root>/cogbox/<jail-id>/            limits; memory.events, pids.events, *.peak
         <root>/cogbox/<jail-id>/jail/       runc's leaf (cgroupsPath)
    v1:  <root>/{memory,pids}/cogbox/<jail-id>/   limits; memory.failcnt, pids.peak
         <root>/<ctrl>/cogbox/<jail-id>/jail/     runc's leaf in every controller

`root` is a parameter so tests can exercise both layouts on a fake tree.

CPU weight: the kernel weighs a cgroup under contention like one busy task of its weight, so
one shared `cogbox` folder of the default weight would make all jails together count as one
process against the service's own: its relays would then preempt the kernels they serve
after every message. Each jail's folder weighs its policy's `cpus` in tasks (one without a
limit), and the shared folder weighs the sum of its jails, so a jailed kernel competes with
host processes as it would outside. The quota (`cpus`) still caps what each jail can take.

Inside a Slurm job step (the driver's own cgroup, /proc/self/cgroup, is under Slurm's
`/slurm[_<node>]/uid_<u>/job_<j>/step_<s>`), the same layout goes under that step instead of
the root, so the job's memory limit binds the jail too (an absolute `/cogbox/...` would escape
it). `remove` then also removes the folders above the jail that are left empty (`cogbox`, and
the step's path in hierarchies Slurm does not use), because a folder left under the step makes
Slurm's own rmdir of its step and job cgroups fail. Only cgroup v1 (Slurm's cgroup/v1 plugin)
is nested; under a Slurm job on cgroup v2 the jail is refused rather than run outside the
job's limits.
"""

import contextlib
import fcntl
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cogbox.errors import CogboxError

DEFAULT_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
PARENT = "cogbox"
LEAF = "jail"
CgroupVersion = Literal[1, 2]
_V2_CONTROLLERS = ("memory", "pids", "cpu")
_V1_LIMITED = ("memory", "pids")  # controllers whose limits live on the launcher's parent


@dataclass(frozen=True)
class _Weight:
    file: str
    task: int  # the weight of one task (the default)
    low: int
    high: int

    def of(self, tasks: float) -> int:
        return min(self.high, max(self.low, round(self.task * tasks)))


_WEIGHTS = {1: _Weight("cpu.shares", 1024, 2, 262144), 2: _Weight("cpu.weight", 100, 1, 10000)}
# Slurm's cgroup/v1 step (the multiple-slurmd build names its root slurm_<node>), and v2's.
# Anchored at a path component, possibly below a container's own cgroup (/docker/<id>/slurm...).
_SLURM_V1_STEP = re.compile(r"^(?:/[^/]+)*?/slurm(?:_[^/]+)?/uid_\d+/job_\d+/step_[^/]+")
_SLURM_V2_STEP = re.compile(r"/job_\d+/step_[^/]+")


class CgroupError(CogboxError):
    """A cgroup the jail needs could not be created or configured."""


def detect_version(root: Path = DEFAULT_ROOT) -> CgroupVersion:
    """2 on a unified (cgroup2) hierarchy, 1 on legacy or hybrid hosts (controllers in v1)."""
    if (root / "cgroup.controllers").is_file():
        return 2
    if (root / "memory").is_dir() and (root / "pids").is_dir():
        return 1
    raise CgroupError(
        f"no usable cgroup hierarchy at {root}: need cgroup v2, or v1 with the memory and "
        "pids controllers mounted"
    )


@dataclass(frozen=True)
class CgroupCounters:
    """What the kernel counted in a jail's cgroups; None where this kernel does not say."""

    oom_kills: int  # processes killed by the memory cgroup's OOM killer
    memory_limit_hits: int  # times usage hit the memory limit (v1 failcnt, v2 events "max")
    pids_limit_hits: int  # forks refused by the pids limit (0 where only the leaf counts them)
    pids_peak: int | None  # most tasks at once (kernels >= 6.11)
    memory_peak_bytes: int | None
    # Inside a Slurm job: the job's (or step's) memory limit, when that one was hit rather
    # than the jail's own (the OOM kill then happens above the jail's cgroups).
    slurm_memory_limit_bytes: int | None = None


class JailCgroup:
    """The cgroups of one jail: create with limits, read counters, kill everything, remove."""

    def __init__(
        self, jail_id: str, *, root: Path = DEFAULT_ROOT, self_cgroup: Path = SELF_CGROUP
    ) -> None:
        self.jail_id = jail_id
        self.root = root
        self.version = detect_version(root)
        self.nest = _own_slurm_step(self_cgroup, self.version)
        self.relative = Path(self.nest.lstrip("/")) / PARENT / jail_id

    @property
    def runc_path(self) -> str:
        """The `linux.cgroupsPath` for runc: a leaf under the launcher's parent."""
        return f"/{self.relative}/{LEAF}"

    def _dir(self, controller: str) -> Path:
        if self.version == 2:
            return self.root / self.relative
        return self.root / controller / self.relative

    def create(
        self, *, memory_bytes: int | None, pids: int | None, cpus: float | None = None
    ) -> None:
        """Create the parent cgroup(s), write the limits and weigh the jail as `cpus` tasks
        (None: one); CgroupError names the file."""
        if self.version == 2:
            self._create_v2(memory_bytes, pids)
        else:
            self._create_v1(memory_bytes, pids)
            if (self.root / "cpu").is_dir():
                self._dir("cpu").mkdir(parents=True, exist_ok=True)
        self.weigh(cpus)

    def weigh(self, cpus: float | None) -> None:
        """Weigh the jail as `cpus` tasks (None: one; 0: the lowest weight, for a kernel that
        waits idle in a pool) and the shared parent as all its jails; CgroupError names the
        file."""
        if self.version == 1 and not (self.root / "cpu").is_dir():
            return  # no cpu controller mounted: nothing weighs anything
        own = self._dir("cpu")
        if not own.is_dir():  # never made anew: that would leave a folder nobody removes
            raise CgroupError(f"the jail's cgroup {own} is gone")
        weight = _WEIGHTS[self.version]
        _write(own / weight.file, str(weight.of(1.0 if cpus is None else cpus)))
        self._weigh_all_jails()

    def _weigh_all_jails(self) -> None:
        """Give the shared parent the sum of its jails' weights (a lock on the folder orders
        jails that start and end at once, so the last write counts them all)."""
        weight = _WEIGHTS[self.version]
        parent = self._dir("cpu").parent
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return  # the last jail under a Slurm step took the folder with it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            jails = [_int(child / weight.file) for child in parent.iterdir() if child.is_dir()]
            total = sum(found for found in jails if found is not None)
            _write(
                parent / weight.file, str(weight.of(total / weight.task) if total else weight.task)
            )
        finally:
            os.close(fd)

    def _create_v2(self, memory_bytes: int | None, pids: int | None) -> None:
        parent = self.root / PARENT
        parent.mkdir(exist_ok=True)
        enable = " ".join(f"+{c}" for c in _V2_CONTROLLERS)
        # Each level must delegate the controllers to the next, or the files do not exist.
        for level in (self.root, parent):
            _write(level / "cgroup.subtree_control", enable)
        own = self._dir("memory")
        own.mkdir()
        _write(own / "cgroup.subtree_control", enable)
        if memory_bytes is not None:
            _write(own / "memory.max", str(memory_bytes))
            # No swap: a jail at its limit is OOM-killed instead of thrashing the host.
            if (own / "memory.swap.max").exists():
                _write(own / "memory.swap.max", "0")
        if pids is not None:
            _write(own / "pids.max", str(pids))

    def _create_v1(self, memory_bytes: int | None, pids: int | None) -> None:
        for controller in _V1_LIMITED:
            self._dir(controller).mkdir(parents=True, exist_ok=True)
        memory = self._dir("memory")
        if memory_bytes is not None:
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            # memsw (memory+swap) exists only with swap accounting; equal to memory = no swap.
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        if pids is not None:
            _write(self._dir("pids") / "pids.max", str(pids))

    def counters(self) -> CgroupCounters:
        """Read the parent's counters (call after the container exited, before `remove`)."""
        memory = self._dir("memory")
        pids = self._dir("pids")
        if self.version == 2:
            memory_events = _keyed(memory / "memory.events")
            pids_events = _keyed(pids / "pids.events")
            return CgroupCounters(
                oom_kills=memory_events.get("oom_kill", 0),
                memory_limit_hits=memory_events.get("max", 0),
                pids_limit_hits=pids_events.get("max", 0),
                pids_peak=_int(pids / "pids.peak"),
                memory_peak_bytes=_int(memory / "memory.peak"),
            )
        # v1 counts OOM kills and refused forks in the cgroup of the process (runc's leaf, gone
        # by now); the parent keeps failcnt and the peaks, which is enough to tell.
        # failcnt stays 0 when the memory+swap limit trips first, so a peak at the limit
        # counts as a hit too.
        oom_control = _keyed(memory / "memory.oom_control")
        peak = _int(memory / "memory.max_usage_in_bytes")
        limit = _int(memory / "memory.limit_in_bytes")
        hits = (_int(memory / "memory.failcnt") or 0) + (_int(memory / "memory.memsw.failcnt") or 0)
        if peak is not None and limit is not None and peak >= limit:
            hits += 1
        slurm_limit = self._slurm_memory_limit_hit()
        return CgroupCounters(
            oom_kills=oom_control.get("oom_kill", 0),
            memory_limit_hits=hits + (slurm_limit is not None),
            slurm_memory_limit_bytes=slurm_limit,
            pids_limit_hits=_keyed(pids / "pids.events").get("max", 0),
            pids_peak=_int(pids / "pids.peak"),
            memory_peak_bytes=peak,
        )

    def _slurm_memory_limit_hit(self) -> int | None:
        """The smallest limit of the enclosing Slurm step and job that usage reached, if any."""
        if not self.nest:
            return None
        step = self.root / "memory" / self.nest.lstrip("/")
        hit: list[int] = []
        for level in (step, step.parent):
            limit = _int(level / "memory.limit_in_bytes")
            peak = _int(level / "memory.max_usage_in_bytes")
            failed = (_int(level / "memory.failcnt") or 0) + (
                _int(level / "memory.memsw.failcnt") or 0
            )
            # The kernel reclaims just under the limit before it kills: within 1 MiB counts.
            if limit is not None and (failed or (peak is not None and peak + (1 << 20) >= limit)):
                hit.append(limit)
        return min(hit, default=None)

    def pids(self) -> set[int]:
        """Every process in the jail's cgroups (the leaf included)."""
        found: set[int] = set()
        controllers = ("memory",) if self.version == 2 else _V1_LIMITED
        for controller in controllers:
            top = self._dir(controller)
            if not top.is_dir():
                continue
            for directory, _, _ in os.walk(top):
                with contextlib.suppress(OSError):
                    text = (Path(directory) / "cgroup.procs").read_text()
                    found.update(int(line) for line in text.split())
        return found

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the jail's cgroups until none is left (or `timeout`)."""
        deadline = time.monotonic() + timeout
        kill_file = self._dir("memory") / "cgroup.kill"
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return
            if self.version == 2 and kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Remove the jail's cgroup directories, leaves first, in every hierarchy."""
        if self.version == 2:
            tops = [self._dir("memory")]
        else:
            tops = [entry / self.relative for entry in _v1_hierarchies(self.root)]
        for top in tops:
            if top.is_dir():
                for found, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                    with contextlib.suppress(OSError):
                        os.rmdir(found)
            # Under a Slurm step, above the jail: `cogbox` once empty, and the step's path where
            # it is ours (hierarchies Slurm leaves alone); Slurm's own folders hold its
            # processes, so rmdir stops there (EBUSY). Outside Slurm the shared `cogbox`
            # stays: removing it would race with a jail being created beside.
            for above in top.parents if self.nest else ():
                if len(above.parts) <= len(top.parts) - len(self.relative.parts):
                    break
                try:
                    os.rmdir(above)
                except OSError:
                    break
        if self.version == 2 or (self.root / "cpu").is_dir():
            with contextlib.suppress(CgroupError, OSError):
                self._weigh_all_jails()


def slurm_step(self_cgroup_text: str, version: CgroupVersion) -> str:
    """The Slurm job step this process runs in ("/slurm_n1/uid_0/job_7/step_0"), or ""."""
    for line in self_cgroup_text.splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if version == 1 and "memory" in controllers.split(","):
            match = _SLURM_V1_STEP.match(path)
            return match.group(0) if match else ""
        if version == 2 and controllers == "" and _SLURM_V2_STEP.search(path):
            return path
    return ""


def remove_slurm_job_leftovers(job_id: str, root: Path = DEFAULT_ROOT) -> list[Path]:
    """For a Slurm Epilog (the job has ended): kill what is left in the jail cgroups under the
    job's cgroups, remove them, then the job's own folders Slurm could not remove because of
    them. A jail whose driver was killed (scancel's SIGKILL after KillWait) leaves these; the
    driver cannot clean up after itself then. Returns the job folders removed."""
    if not job_id.isdigit():
        raise CgroupError(f"{job_id!r} is not a Slurm job id")
    if detect_version(root) != 1:
        return []
    removed = []
    for job in sorted(root.glob(f"*/slurm*/uid_*/job_{job_id}")):
        if job.is_symlink() or not any(job.glob("step_*/cogbox")):
            continue  # not blocked by a jail: Slurm's own cleanup is not ours to redo
        for cogbox in job.glob("step_*/cogbox"):
            for directory, _, _ in os.walk(cogbox):
                with contextlib.suppress(OSError, ValueError):
                    for pid in (Path(directory) / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for directory, _, _ in sorted(os.walk(job), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            if not job.exists():
                removed.append(job)
                break
            time.sleep(0.05)  # killed processes leave their cgroup a moment later
    return removed


def _own_slurm_step(self_cgroup: Path, version: CgroupVersion) -> str:
    try:
        step = slurm_step(self_cgroup.read_text(), version)
    except OSError:
        return ""
    if step and version == 2:
        raise CgroupError(
            f"this jail runs inside the Slurm job step {step} on cgroup v2, where cogbox "
            "cannot nest its cgroups yet; use Slurm's cgroup/v1 plugin"
        )
    return step


def _v1_hierarchies(root: Path) -> list[Path]:
    # Skip the co-mount aliases (cpu -> cpu,cpuacct): the real directory is listed too.
    return [entry for entry in sorted(root.iterdir()) if entry.is_dir() and not entry.is_symlink()]


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from exc


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("oom_kill 3\\nmax 0") as a dict; empty if unreadable."""
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
