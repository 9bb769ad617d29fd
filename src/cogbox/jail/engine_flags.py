"""Render a policy as `docker run` / `podman run` flags: the jail's limits in a plain engine.

Pure: `policy -> argv words`. With the seccomp profile from `render_docker_profile`, these
carry everything a container engine can enforce; what only cogbox's launcher does (the chmod
guard, the work-dir quota on a persistent folder, the wall-time watchdog) is listed by
`not_enforced`. See docs/jail.md, "What a plain engine enforces".
"""

from cogbox.images.paths import TMPDIR, WORKDIR
from cogbox.jail.oci import CPU_TIME_GRACE_SECONDS
from cogbox.jail.policy import JAIL_GID, JAIL_UID, Policy

# RLIMIT_NPROC counts every process of the uid on the host, so the jail never limits it
# (the pids cgroup does). It is still set explicitly: podman otherwise asks for the host's
# maximum, which an engine without CAP_SYS_RESOURCE (a nested sandbox) cannot grant. This
# is Linux's default pid_max, above any pids limit a policy sets.
NPROC_UNLIMITED_ENOUGH = 32768


def render_engine_flags(policy: Policy, *, seccomp_profile: str) -> list[str]:
    """`docker run` / `podman run` flags for `policy`; `seccomp_profile`: the path of the
    file `cogbox policy render --format docker` wrote."""
    limits = policy.limits
    flags = [
        f"--user={JAIL_UID}:{JAIL_GID}",
        f"--memory={limits.memory_bytes}",
        f"--memory-swap={limits.memory_bytes}",  # memory + swap = memory: no swap
        f"--pids-limit={limits.pids}",
    ]
    if limits.cpus is not None:
        flags.append(f"--cpus={limits.cpus:g}")
    flags += [
        f"--ulimit=nofile={limits.nofile}:{limits.nofile}",
        f"--ulimit=nproc={NPROC_UNLIMITED_ENOUGH}:{NPROC_UNLIMITED_ENOUGH}",
        "--ulimit=core=0:0",
    ]
    if limits.fsize_bytes is not None:
        flags.append(f"--ulimit=fsize={limits.fsize_bytes}:{limits.fsize_bytes}")
    if limits.cpu_time_seconds is not None:
        soft = limits.cpu_time_seconds
        flags.append(f"--ulimit=cpu={soft}:{soft + CPU_TIME_GRACE_SECONDS}")
    flags += [
        "--read-only",
        f"--tmpfs={TMPDIR}:rw,nosuid,nodev,size={limits.tmp_size_bytes},mode=1777",
        f"--shm-size={limits.shm_size_bytes}",
        # The root is read-only, so /home/work is a volume: anonymous (removed with the
        # container by `--rm`), filled from the image with its owner 1000. Name it
        # (`-v NAME:/home/work`) to keep it. No engine sets a per-folder quota.
        f"--volume={WORKDIR}",
    ]
    for bind in policy.readonly_binds:
        flags.append(f"--volume={bind.source}:{bind.destination}:ro")
    flags += [
        f"--network={policy.network}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--security-opt=seccomp={seccomp_profile}",
    ]
    return flags


def not_enforced(policy: Policy) -> list[str]:
    """What the policy asks for that these flags cannot make a plain engine enforce."""
    gaps = []
    if policy.chmod_globs is not None:
        gaps.append(
            "OP_CHMOD globs: only cogbox's chmod guard checks chmod paths; in an engine, "
            "file ownership alone decides"
        )
    if policy.limits.workdir_quota_bytes is not None:
        gaps.append(
            f"workdir_quota {policy.limits.workdir_quota_bytes}: cogbox's launcher only "
            "(an engine's volume has no quota)"
        )
    if policy.limits.wall_time_seconds is not None:
        gaps.append(
            f"wall_time_seconds {policy.limits.wall_time_seconds:g}: cogbox's watchdog only "
            "(use `timeout` or the orchestrator's deadline)"
        )
    return gaps
