"""Render a policy as a Kubernetes pod spec fragment plus the Localhost seccomp profile it names.

Kubernetes cannot express every jail setting in a pod; what it cannot express is listed in
the result's `notEnforced`, so that a caller never mistakes the fragment for the whole jail.
"""

from typing import Any

from cogbox.images.paths import TMPDIR, WORKDIR
from cogbox.jail.policy import JAIL_GID, JAIL_UID, Policy
from cogbox.jail.seccomp import render_docker_profile

SHM_DIR = "/dev/shm"


def render_kubernetes(policy: Policy, *, image: str, profile_name: str) -> dict[str, Any]:
    """`{"seccompProfile": {path, profile}, "pod": ..., "networkPolicy"?, "notEnforced": [...]}`.

    Install `seccompProfile.profile` as `<kubelet root>/seccomp/<seccompProfile.path>` on
    every node (e.g. /var/lib/kubelet/seccomp/cogbox/NAME.json) before starting pods.
    """
    if not profile_name or "/" in profile_name or profile_name.startswith("."):
        raise ValueError(f"{profile_name!r} is not a usable profile file name")
    profile_path = f"cogbox/{profile_name}.json"
    seccomp = {"type": "Localhost", "localhostProfile": profile_path}
    limits = policy.limits
    labels = {"app.kubernetes.io/managed-by": "cogbox", "cogbox/policy": profile_name}

    resource_limits = {"memory": _quantity(limits.memory_bytes)}
    if limits.cpus is not None:
        resource_limits["cpu"] = f"{round(limits.cpus * 1000)}m"
    if limits.workdir_quota_bytes is not None:
        resource_limits["ephemeral-storage"] = _quantity(limits.workdir_quota_bytes)

    container = {
        "name": "kernel",
        "image": image,
        "workingDir": WORKDIR,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JAIL_UID,
            "runAsGroup": JAIL_GID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "seccompProfile": seccomp,
        },
        "resources": {"limits": resource_limits, "requests": dict(resource_limits)},
        "env": [{"name": key, "value": value} for key, value in policy.extra_envs.items()],
        "volumeMounts": [
            {"name": "work", "mountPath": WORKDIR},
            {"name": "tmp", "mountPath": TMPDIR},
            {"name": "shm", "mountPath": SHM_DIR},
            *(
                {"name": f"bind-{index}", "mountPath": bind.destination, "readOnly": True}
                for index, bind in enumerate(policy.readonly_binds)
            ),
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": _empty_dir(limits.workdir_quota_bytes)},
        {
            "name": "tmp",
            "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(limits.tmp_size_bytes)},
        },
        {
            "name": "shm",
            "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(limits.shm_size_bytes)},
        },
        *(
            {"name": f"bind-{index}", "hostPath": {"path": str(bind.source), "type": "Directory"}}
            for index, bind in enumerate(policy.readonly_binds)
        ),
    ]
    pod: dict[str, Any] = {
        "metadata": {"labels": labels},
        "spec": {
            "automountServiceAccountToken": False,  # no API credentials inside the jail
            "enableServiceLinks": False,  # no other services' addresses in the environment
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": JAIL_UID,
                "runAsGroup": JAIL_GID,
                "fsGroup": JAIL_GID,
                "seccompProfile": seccomp,
            },
            "containers": [container],
            "volumes": volumes,
        },
    }
    if limits.wall_time_seconds is not None:
        pod["spec"]["activeDeadlineSeconds"] = max(1, round(limits.wall_time_seconds))

    result: dict[str, Any] = {
        "seccompProfile": {"path": profile_path, "profile": render_docker_profile(policy)},
        "pod": pod,
        "notEnforced": _not_enforced(policy),
    }
    if policy.network == "none":
        # Pods always get a network interface; a deny-all NetworkPolicy is the closest match
        # to "loopback only", and only if the cluster's network plugin enforces policies.
        result["networkPolicy"] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"cogbox-{profile_name}-isolated"},
            "spec": {
                "podSelector": {"matchLabels": labels},
                "policyTypes": ["Ingress", "Egress"],
            },
        }
    return result


def _not_enforced(policy: Policy) -> list[str]:
    limits = policy.limits
    gaps = [
        f"pids limit {limits.pids}: set the kubelet's podPidsLimit",
        f"open files {limits.nofile}: set by the container runtime's default rlimits",
        "RLIMIT_CORE 0: set by the container runtime's default rlimits",
    ]
    if limits.fsize_bytes is not None:
        gaps.append(f"file size {_quantity(limits.fsize_bytes)}: no pod field sets RLIMIT_FSIZE")
    if limits.cpu_time_seconds is not None:
        gaps.append(f"cpu time {limits.cpu_time_seconds}s: no pod field sets RLIMIT_CPU")
    exec_denied = [m for m in (WORKDIR, TMPDIR) if not policy.exec_allowed_at(m)]
    if exec_denied:
        gaps.append(f"noexec on {', '.join(exec_denied)}: volumes cannot be mounted noexec")
    if policy.network == "none":
        gaps.append("network none: needs a network plugin that enforces NetworkPolicy")
    gaps.append(
        "preserved_env_keys: every variable of the image's own config passes; only "
        "extra_envs are set by this fragment"
    )
    gaps.append("masked /proc paths and /dev contents: as the container runtime's defaults")
    return gaps


def _empty_dir(size: int | None) -> dict[str, Any]:
    return {} if size is None else {"sizeLimit": _quantity(size)}


def _quantity(size: int) -> str:
    """A Kubernetes quantity in binary units when exact ("4Gi"), else plain bytes."""
    for suffix, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
