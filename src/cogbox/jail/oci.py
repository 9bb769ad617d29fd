"""Render a policy as a complete OCI runtime `config.json` for runc, and the jail's environment.

Pure functions: nothing here touches the host. The launcher writes the returned dict as
`config.json` into a bundle unchanged (so `cogbox policy render --format oci` prints what runs)
and enforces what OCI cannot express (workdir quota, wall time).
"""

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogbox.images.paths import JAIL_INIT, TMPDIR, WORKDIR
from cogbox.jail.gpu import DRIVER_DIR, NvidiaHost, give_gpus
from cogbox.jail.identity import Identity
from cogbox.jail.init import HOST_INIT, under_init
from cogbox.jail.policy import JAIL_GID, JAIL_UID, Policy
from cogbox.jail.seccomp import render_oci_seccomp

OCI_VERSION = "1.0.2"
CPU_PERIOD_US = 100_000
# RLIMIT_CPU: SIGXCPU at the soft limit (so the launcher can say "CPU time limit"), SIGKILL
# this many seconds later if the process ignores or handles it.
CPU_TIME_GRACE_SECONDS = 1

# runc's and Docker's defaults (runc `spec`, moby oci/defaults.go), plus powercap, which
# moby masks since the PLATYPUS power side channel. runc skips paths a kernel lacks.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
_KERNEL_MOUNT_POINTS = ("/proc", "/dev", "/sys")
# A jail in its own user namespace without its own network namespace (`network: host`):
# see render_oci_spec. r* options are recursive (mount_setattr; runc >= 1.1).
_SYS_BIND_OPTIONS = ["rbind", "rro", "rnosuid", "rnodev", "rnoexec"]
_SYS_SUBMOUNTS = ("/sys/fs", "/sys/kernel")
# What a login would set; offered as requests, so the policy's preserved keys still decide.
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": WORKDIR,
    "USER": "work",
    "SHELL": "/bin/sh",
}


@dataclass(frozen=True)
class Bind:
    """A host path bind-mounted into the jail (the launcher's /home/work, sockets, ...)."""

    source: Path
    destination: str
    readonly: bool = True
    # Always noexec, whatever the policy: a source mounted noexec must be bound so, since a
    # user namespace cannot clear that (locked) flag on the bind's remount.
    noexec: bool = False
    # A storage folder on a filesystem of its own: the launcher gives all of it to the
    # jail's identity before the jail starts (`folder_owner.give_folder`).
    give_to_jail: bool = False
    # Executable whatever the policy's OP_EXEC says: the jail's init, the GPU driver's code.
    always_exec: bool = False


def jail_env(
    policy: Policy, image_env: Mapping[str, str], requested: Mapping[str, str]
) -> dict[str, str]:
    """The jail's whole environment: preserved keys, then the policy's `extra_envs`.

    A preserved key takes the session's `requested` value, else the image's. Nothing else
    passes, and the service's own environment is never an input, so it cannot leak in.
    """
    env: dict[str, str] = {}
    for key in policy.preserved_env_keys:
        if key in requested:
            env[key] = requested[key]
        elif key in image_env:
            env[key] = image_env[key]
    env.update(policy.extra_envs)  # the policy has the last word over requests
    for key, value in env.items():
        if "\0" in value:
            raise ValueError(f"environment value of {key} contains a NUL byte")
    return env


def render_oci_spec(
    policy: Policy,
    *,
    rootfs: Path,
    args: list[str],
    env: dict[str, str],
    cwd: str = WORKDIR,
    uid: int = JAIL_UID,
    gid: int = JAIL_GID,
    binds: Sequence[Bind] = (),
    hostname: str = "cogbox",
    cgroups_path: str | None = None,
    seccomp_listener: str | None = None,
    identity: Identity | None = None,
    runtime: str = "runc",
    init: bool = False,
    gpus: NvidiaHost | None = None,
    limits_on_parent_cgroup: bool = False,
) -> dict[str, Any]:
    """A runc 1.1 `config.json` running `args` as `uid` in a jail shaped by `policy`.

    `binds` must include the host directory for /home/work. `env` is used exactly as given
    (build it with `jail_env`). `seccomp_listener` is the unix socket of a chmod guard that
    answers chmod calls by OP_CHMOD (used only when OP_CHMOD is narrower than `*`).
    `identity` puts the jail in its own user namespace whose ids are that identity's block
    of host ids (`uid` inside is then `identity.host_uid` on the host). `runtime` is the
    OCI runtime that will run it (runc, or runsc: see `render_oci_seccomp`).

    What the launcher adds, here so that the rendered config is what runs: `init` runs
    `args` under the jail's init (tini, bound from the host) when the policy allows forks;
    `gpus` gives the jail those GPU devices and their driver folder (bound at DRIVER_DIR by
    the caller); `limits_on_parent_cgroup` leaves the memory and pids limits out of the
    config because the launcher sets them on the jail's parent cgroup (cgroups.py), where
    their counters survive runc's cleanup and the same limit on runc's leaf cannot trip
    first. Raises ValueError for arguments that would weaken the jail.
    """
    if not args:
        raise ValueError("args must name the program to run")
    if init and policy.forks_allowed:
        args = under_init(args)
        binds = [*binds, Bind(HOST_INIT, JAIL_INIT, readonly=True, always_exec=True)]
    if gpus is not None and not any(bind.destination == DRIVER_DIR for bind in binds):
        raise ValueError(f"gpus need the driver folder's bind at {DRIVER_DIR}")
    if uid == 0 or gid == 0:
        raise ValueError("the jail never runs code as root (uid/gid 0)")
    for key in env:
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"{key!r} is not an environment variable name")
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": []},
            "args": list(args),
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": cwd,
            # No capabilities at all: with uid 1000 and noNewPrivileges, setuid files and
            # file capabilities in the image grant nothing either.
            "capabilities": {
                "bounding": [],
                "effective": [],
                "inheritable": [],
                "permitted": [],
                "ambient": [],
            },
            "rlimits": _rlimits(policy),
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": _kernel_mounts(policy) + _bind_mounts(policy, binds),
        "linux": {
            "namespaces": _namespaces(policy),
            "resources": _resources(policy, limits_on_parent_cgroup),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": render_oci_seccomp(policy, listener_path=seccomp_listener, runtime=runtime),
        },
    }
    if cgroups_path is not None:
        spec["linux"]["cgroupsPath"] = cgroups_path
    if identity is not None:
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = identity.uid_mappings()
        spec["linux"]["gidMappings"] = identity.uid_mappings()
        if policy.network != "none":
            # A user namespace may mount sysfs only with a network namespace of its own.
            # Without one: the host's /sys, which a fresh sysfs in the host's network
            # namespace would have shown, bound recursively (the kernel refuses a plain bind
            # that would uncover what its submounts hide), read-only all the way down, and
            # those submounts (cgroups, bpf, debugfs, tracefs, ...) masked.
            spec["mounts"] = [
                _mount("/sys", "bind", "/sys", _SYS_BIND_OPTIONS)
                if mount["destination"] == "/sys"
                else mount
                for mount in spec["mounts"]
            ]
            spec["linux"]["maskedPaths"] += list(_SYS_SUBMOUNTS)
    if gpus is not None:
        give_gpus(spec, gpus)
    return spec


def _rlimits(policy: Policy) -> list[dict[str, Any]]:
    # Never RLIMIT_AS (CUDA reserves tens of GiB of address space; memory is the cgroup's
    # job) and never RLIMIT_NPROC (it counts every process of uid 1000 on the host).
    limits = policy.limits
    rlimits = [
        {"type": "RLIMIT_NOFILE", "hard": limits.nofile, "soft": limits.nofile},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
    ]
    if limits.fsize_bytes is not None:
        rlimits.append(
            {"type": "RLIMIT_FSIZE", "hard": limits.fsize_bytes, "soft": limits.fsize_bytes}
        )
    if limits.cpu_time_seconds is not None:
        soft = limits.cpu_time_seconds
        rlimits.append({"type": "RLIMIT_CPU", "hard": soft + CPU_TIME_GRACE_SECONDS, "soft": soft})
    return rlimits


def _kernel_mounts(policy: Policy) -> list[dict[str, Any]]:
    limits = policy.limits
    tmp_options = ["nosuid", "nodev", "mode=1777", f"size={limits.tmp_size_bytes}"]
    if not policy.exec_allowed_at(TMPDIR):
        tmp_options.insert(0, "noexec")
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            ["nosuid", "noexec", "nodev", "mode=1777", f"size={limits.shm_size_bytes}"],
        ),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        _mount(TMPDIR, "tmpfs", "tmpfs", tmp_options),
    ]


def _bind_mounts(policy: Policy, binds: Sequence[Bind]) -> list[dict[str, Any]]:
    every = [
        *binds,
        *(Bind(bind.source, bind.destination, readonly=True) for bind in policy.readonly_binds),
    ]
    seen: set[str] = set()
    for bind in every:
        destination = bind.destination
        if not destination.startswith("/") or ".." in destination.split("/"):
            raise ValueError(f"bind destination {destination!r} is not an absolute clean path")
        if destination in seen:
            raise ValueError(f"two binds target {destination}")
        if destination in ("/", TMPDIR) or any(
            destination == point or destination.startswith(point + "/")
            for point in _KERNEL_MOUNT_POINTS
        ):
            raise ValueError(f"bind destination {destination} would replace a jail mount")
        seen.add(destination)
    if WORKDIR not in seen:
        raise ValueError(f"binds must include the host directory for {WORKDIR}")

    mounts = []
    # Parents before children, so /home/work is in place before /home/work/data.
    for bind in sorted(every, key=lambda b: posixpath.normpath(b.destination).count("/")):
        # Plain "bind", not "rbind": a read-only rbind would leave submounts writable.
        options = ["bind", "nosuid", "nodev", "ro" if bind.readonly else "rw"]
        if not bind.always_exec and (bind.noexec or not policy.exec_allowed_at(bind.destination)):
            options.insert(1, "noexec")
        mounts.append(_mount(bind.destination, "bind", str(bind.source), options))
    return mounts


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def _namespaces(policy: Policy) -> list[dict[str, str]]:
    kinds = ["pid", "mount", "ipc", "uts", "cgroup"]
    if policy.network == "none":
        kinds.append("network")  # a fresh namespace: runc brings up loopback only
    return [{"type": kind} for kind in kinds]


def _resources(policy: Policy, limits_on_parent_cgroup: bool) -> dict[str, Any]:
    limits = policy.limits
    resources: dict[str, Any] = {
        # Deny all devices; runc still adds the standard ones (null, zero, full, random,
        # urandom, tty, ptmx) that it creates under /dev.
        "devices": [{"allow": False, "access": "rwm"}],
    }
    if not limits_on_parent_cgroup:
        # swap is memory+swap in OCI (v1 semantics): equal to memory means no swap at all.
        resources["memory"] = {"limit": limits.memory_bytes, "swap": limits.memory_bytes}
        resources["pids"] = {"limit": limits.pids}
    if limits.cpus is not None:
        resources["cpu"] = {
            "quota": max(1000, round(limits.cpus * CPU_PERIOD_US)),
            "period": CPU_PERIOD_US,
            # Under contention the kernel weighs a whole cgroup like one busy task; weigh a
            # jail allowed N cores like N tasks, so its threads compete like the same
            # threads outside (the launcher weighs the jail's parent cgroups the same way:
            # cgroups.py).
            "shares": max(2, round(1024 * limits.cpus)),
        }
    return resources
