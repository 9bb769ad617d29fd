"""The resolved jail policy: `Policy` and its `Limits`, every value checked to be enforceable.

What `parse_policy`/`load_policy` (policy.py) return; the renderers (oci.py, seccomp.py,
kubernetes.py, engine_flags.py) and the launcher read it. The defaults a policy file's
omitted fields take live here too.
"""

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from cogbox.images.paths import TMPDIR, WORKDIR
from cogbox.jail.policy_values import ContainerPath, container_path

# The user code runs as *inside* every jail (the images' work user): never root. On the
# host it is another id per session, `Identity.host_uid` (see identity.py).
JAIL_UID = 1000
JAIL_GID = 1000
# Writable mounts the sandbox user (uid 1000) owns the contents of; everything else it sees is
# the read-only, root-owned image or kernel filesystems.
WRITABLE_MOUNTS = (WORKDIR, TMPDIR)
OPS = ("OP_OPEN", "OP_ACCESS", "OP_EXEC", "OP_STAT", "OP_CHMOD")

# Container paths an extra bind may not cover: the jail's own mounts and kernel filesystems.
_RESERVED_DESTINATIONS = ("/", "/proc", "/sys", "/dev", WORKDIR, TMPDIR)
# Host paths a read-only bind may not expose.
_REFUSED_SOURCES = ("/", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc")
EVERYTHING = "*"  # a whitelist glob that covers every path


class Limits(BaseModel):
    """Resource limits, resolved; `None` means no limit. See docs/jail.md for who enforces each."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int  # memory cgroup (memory + swap = memory: no swap)
    cpus: float | None  # cpu cgroup quota, in cores
    pids: int  # pids cgroup: live processes AND threads
    nofile: int  # RLIMIT_NOFILE
    fsize_bytes: int | None  # RLIMIT_FSIZE: largest file a process may write
    workdir_quota_bytes: int | None  # launcher: disk quota of /home/work
    tmp_size_bytes: int  # tmpfs size= of /tmp
    shm_size_bytes: int  # tmpfs size= of /dev/shm
    cpu_time_seconds: int | None  # RLIMIT_CPU, per process
    wall_time_seconds: float | None  # launcher watchdog: the session's lifetime


class ReadonlyBind(BaseModel):
    """A host directory shown read-only inside the jail (policy `mounts.readonly_binds`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Annotated[Path, BeforeValidator(container_path)]
    destination: ContainerPath

    @field_validator("source")
    @classmethod
    def _not_host_control(cls, source: Path) -> Path:
        # "ro" does not stop connect() on a socket or ioctl() on a device, so binds of the
        # host's root, kernel filesystems and runtime sockets (/run/docker.sock...) are refused.
        for refused in _REFUSED_SOURCES:
            if source == Path(refused) or (refused != "/" and source.is_relative_to(refused)):
                raise ValueError(f"binding host {source} would expose the host's control files")
        return source

    @field_validator("destination")
    @classmethod
    def _not_reserved(cls, destination: str) -> str:
        for reserved in _RESERVED_DESTINATIONS:
            if destination == reserved or (
                reserved in ("/proc", "/sys", "/dev") and destination.startswith(reserved + "/")
            ):
                raise ValueError(f"{destination} is one of the jail's own mounts")
        return destination


class Policy(BaseModel):
    """A resolved jail policy: defaults merged in, every value checked to be enforceable."""

    model_config = ConfigDict(frozen=True)

    source: str
    # Backend.AI's fields, as accepted (see docs/jail.md for their meaning here).
    whitelist_paths: Mapping[str, tuple[str, ...]]
    exec_allowance: int  # always -1: exec counting is not enforceable
    fork_allowance: int  # -1 (unlimited) or 0 (threads only, enforced by seccomp)
    max_child_procs: int | None  # as written; resolved into limits.pids
    extra_envs: Mapping[str, str]
    preserved_env_keys: tuple[str, ...]
    allowed_syscalls: tuple[str, ...]  # sorted; argument rules live in the seccomp renderer
    diff_to_default: bool
    # cogbox's extensions.
    limits: Limits
    network: Literal["none", "host"]
    readonly_binds: tuple[ReadonlyBind, ...]
    gpu: bool = False  # the host's NVIDIA GPUs in the jail (cogbox.jail.gpu); refused without

    def with_limits(self, **changes: Any) -> "Policy":
        """This policy with some resolved limits replaced, e.g. `memory_bytes=1 << 30`."""
        limits = Limits.model_validate({**self.limits.model_dump(), **changes})
        return self.model_copy(update={"limits": limits})

    @property
    def forks_allowed(self) -> bool:
        """False when `fork_allowance: 0`: only threads may be created (seccomp on clone)."""
        return self.fork_allowance != 0

    def exec_allowed_at(self, mount_point: str) -> bool:
        """Whether programs may be run from the mount at `mount_point` (else it is `noexec`).

        The read-only image root always allows exec: it holds the interpreter.
        """
        if mount_point == "/":
            return True
        directories = {glob_directory(glob) for glob in self.whitelist_paths["OP_EXEC"]}
        return EVERYTHING in directories or posixpath.normpath(mount_point) in directories

    @property
    def chmod_globs(self) -> tuple[str, ...] | None:
        """OP_CHMOD's globs when they narrow where chmod works; None when they allow it anywhere.

        Narrowed globs are checked on every chmod by the launcher's chmod guard (seccomp user
        notification, see chmod_guard.py); file ownership stays the enforcement beneath it.
        """
        globs = self.whitelist_paths["OP_CHMOD"]
        if any(glob_directory(glob) == EVERYTHING for glob in globs):
            return None
        return globs

    def describe(self) -> list[str]:
        """A few lines saying what this policy enforces, for `cogbox policy check`."""
        limits = self.limits

        def size(value: int | None) -> str:
            return "unlimited" if value is None else _human_size(value)

        def seconds(value: float | None) -> str:
            return "unlimited" if value is None else f"{value:g}s"

        exec_mounts = [
            m for m in (*WRITABLE_MOUNTS, *self._bind_points()) if self.exec_allowed_at(m)
        ]
        return [
            f"syscalls: {len(self.allowed_syscalls)} allowed, others fail with EPERM "
            "(clone3 with ENOSYS); x86_64 only",
            f"memory {size(limits.memory_bytes)}, cpus "
            f"{'unlimited' if limits.cpus is None else f'{limits.cpus:g}'}, "
            f"pids {limits.pids}, open files {limits.nofile}",
            f"file size {size(limits.fsize_bytes)}, /home/work quota "
            f"{size(limits.workdir_quota_bytes)}, /tmp {size(limits.tmp_size_bytes)}, "
            f"/dev/shm {size(limits.shm_size_bytes)}",
            f"cpu time {seconds(limits.cpu_time_seconds)} per process, "
            f"wall time {seconds(limits.wall_time_seconds)}",
            f"network: {self.network}; forks: {'allowed' if self.forks_allowed else 'denied'}; "
            f"exec from: image root{''.join(', ' + m for m in exec_mounts)}",
            f"environment: {len(self.preserved_env_keys)} preserved keys, "
            f"{len(self.extra_envs)} extra",
        ]

    def _bind_points(self) -> list[str]:
        return [bind.destination for bind in self.readonly_binds]


def _human_size(value: int) -> str:
    for unit, factor in (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def glob_directory(glob: str) -> str:
    """The directory a whitelist glob covers ("/home/work/*" -> "/home/work"), or "*" for all."""
    text = glob.strip()
    if text in ("*", "**", "/", "/*", "/**"):
        return EVERYTHING
    for suffix in ("/**", "/*", "/"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return posixpath.normpath(text) if text.startswith("/") else text


DEFAULT_WHITELIST_PATHS: Mapping[str, tuple[str, ...]] = {
    "OP_OPEN": ("*",),
    "OP_ACCESS": ("*",),
    "OP_EXEC": ("*",),
    "OP_STAT": ("*",),
    "OP_CHMOD": ("/home/work/*", "/tmp/*"),
}
DEFAULT_PRESERVED_ENV_KEYS = (
    "HOME",
    "PATH",
    "LANG",
    "USER",
    "SHELL",
    "TERM",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
)
DEFAULT_LIMITS = Limits(
    memory_bytes=2 << 30,
    cpus=1.0,
    pids=128,
    nofile=1024,
    fsize_bytes=2 << 30,
    workdir_quota_bytes=4 << 30,
    tmp_size_bytes=512 << 20,
    shm_size_bytes=64 << 20,
    cpu_time_seconds=None,  # RLIMIT_CPU is per process: a capped kernel dies mid-session
    wall_time_seconds=24 * 3600.0,
)
