"""Render a policy's syscall rules as OCI `linux.seccomp` and as a Docker/Kubernetes profile."""

import copy
from collections.abc import Iterable
from typing import Any

from cogbox.jail.policy import Policy
from cogbox.jail.syscalls import (
    ARGUMENT_CHECKED,
    CHMOD_SYSCALLS,
    CLONE_NAMESPACE_FLAGS,
    CLONE_THREAD,
    ERRNO_ENOSYS,
    ERRNO_EPERM,
    PERSONALITY_VALUES,
    SOCKET_FAMILIES,
    SOCKETPAIR_FAMILIES,
)

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"
NOTIFY = "SCMP_ACT_NOTIFY"
# x86_64 only: listing no other architecture makes the filter refuse i386 (`int 0x80`) and
# x32 calls, which would otherwise reach the kernel under different numbers than we check.
ARCHITECTURES = ("SCMP_ARCH_X86_64",)


def render_oci_seccomp(
    policy: Policy, *, listener_path: str | None = None, runtime: str = "runc"
) -> dict[str, Any]:
    """The OCI runtime-spec `linux.seccomp` object for `policy` (runc 1.1 accepts it).

    Everything not allowed fails with EPERM, as under Docker; clone3 fails with ENOSYS so
    that glibc falls back to clone, whose flags are checked here. With `listener_path` (a
    unix socket a chmod guard listens on) and OP_CHMOD narrower than `*`, the path-taking
    chmod calls are sent to that guard (SCMP_ACT_NOTIFY); without it they are allowed and
    file ownership alone decides.

    Under `runtime` "runsc", gVisor applies these rules inside its own kernel and answers
    every ERRNO rule with EPERM (its OCI conversion drops `errnoRet`): clone3 would then fail
    with EPERM, glibc would not fall back to clone, and no thread could start. There clone3
    is passed to gVisor's kernel instead, which does not implement it (ENOSYS), so glibc
    falls back to clone and the clone rule's flag checks apply as under runc.
    """
    allowed = set(policy.allowed_syscalls)
    if not policy.forks_allowed:
        allowed -= {"fork", "vfork"}
    notified: set[str] = set()
    if listener_path is not None and policy.chmod_globs is not None:
        notified = allowed & CHMOD_SYSCALLS
    rules: list[dict[str, Any]] = [
        {"names": sorted(allowed - ARGUMENT_CHECKED - notified), "action": ALLOW},
    ]
    if notified:
        rules.append({"names": sorted(notified), "action": NOTIFY})
    if "clone" in allowed:
        rules.append(_clone_rule(forks_allowed=policy.forks_allowed))
    if "socket" in allowed:
        rules.extend(_equals_rules("socket", SOCKET_FAMILIES.values()))
    if "socketpair" in allowed:
        rules.extend(_equals_rules("socketpair", SOCKETPAIR_FAMILIES.values()))
    if "personality" in allowed:
        rules.extend(_equals_rules("personality", PERSONALITY_VALUES))
    if runtime == "runsc":
        rules.append({"names": ["clone3"], "action": ALLOW})
    else:
        rules.append({"names": ["clone3"], "action": ERRNO, "errnoRet": ERRNO_ENOSYS})
    profile: dict[str, Any] = {
        "defaultAction": ERRNO,
        "defaultErrnoRet": ERRNO_EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": rules,
    }
    if notified:
        profile["listenerPath"] = listener_path
    return profile


def render_docker_profile(policy: Policy) -> dict[str, Any]:
    """The same rules as a Docker `--security-opt seccomp=FILE` / Kubernetes Localhost profile.

    Docker's profile format is a superset of OCI's `linux.seccomp`; the jail uses only the
    common part, so the two renderings are identical.
    """
    return copy.deepcopy(render_oci_seccomp(policy))


def _clone_rule(*, forks_allowed: bool) -> dict[str, Any]:
    # SCMP_CMP_MASKED_EQ: (arg & value) == valueTwo. Namespace flags must be clear; with
    # fork_allowance 0, CLONE_THREAD must also be set, so only threads can be created.
    mask = CLONE_NAMESPACE_FLAGS | (0 if forks_allowed else CLONE_THREAD)
    expected = 0 if forks_allowed else CLONE_THREAD
    return {
        "names": ["clone"],
        "action": ALLOW,
        "args": [{"index": 0, "value": mask, "valueTwo": expected, "op": "SCMP_CMP_MASKED_EQ"}],
    }


def _equals_rules(name: str, values: Iterable[int]) -> list[dict[str, Any]]:
    # One rule per value: libseccomp ORs rules for the same syscall, ANDs args within one.
    return [
        {
            "names": [name],
            "action": ALLOW,
            "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        }
        for value in values
    ]
