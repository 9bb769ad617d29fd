"""The seccomp renderers: OCI `linux.seccomp` and the Docker/Kubernetes profile."""

import json
from typing import Any

import pytest

from cogbox.jail.policy import Policy, default_policy, parse_policy
from cogbox.jail.seccomp import render_docker_profile, render_oci_seccomp
from cogbox.jail.syscalls import CLONE_NAMESPACE_FLAGS, CLONE_THREAD

# The OCI runtime-spec's seccomp definitions (schema/defs-linux.json, config-linux.json).
OCI_ACTIONS = {
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
}
OCI_OPERATORS = {
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
}
OCI_ARCHES = {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"}
UINT64_MAX = (1 << 64) - 1


def oci_seccomp_shape_problems(profile: dict[str, Any]) -> list[str]:
    """Deviations from the OCI seccomp object's schema (keys, types, enums, ranges)."""
    problems = []
    allowed_top = {"defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls"}
    problems += [f"unknown key {key}" for key in set(profile) - allowed_top]
    if profile.get("defaultAction") not in OCI_ACTIONS:
        problems.append("defaultAction")
    if not isinstance(profile.get("defaultErrnoRet", 0), int):
        problems.append("defaultErrnoRet")
    problems += [f"arch {a}" for a in profile.get("architectures", []) if a not in OCI_ARCHES]
    for rule in profile.get("syscalls", []):
        if set(rule) - {"names", "action", "errnoRet", "args"}:
            problems.append(f"rule keys {sorted(rule)}")
        names = rule.get("names")
        if not names or not all(isinstance(name, str) for name in names):
            problems.append(f"rule names {names}")
        if rule.get("action") not in OCI_ACTIONS:
            problems.append(f"rule action {rule.get('action')}")
        for arg in rule.get("args", []):
            if (
                set(arg) - {"index", "value", "valueTwo", "op"}
                or arg.get("op") not in OCI_OPERATORS
            ):
                problems.append(f"arg {arg}")
            if not 0 <= arg["index"] <= 5 or not 0 <= arg["value"] <= UINT64_MAX:
                problems.append(f"arg range {arg}")
    return problems


def allowed_names(profile: dict[str, Any]) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW"
        for name in rule["names"]
    }


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return default_policy()


def test_default_action_fails_with_eperm(policy: Policy) -> None:
    profile = render_oci_seccomp(policy)
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_clone3_is_answered_with_enosys(policy: Policy) -> None:
    assert rules_for(render_oci_seccomp(policy), "clone3") == [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    ]


def test_only_the_x86_64_architecture_is_admitted(policy: Policy) -> None:
    assert render_oci_seccomp(policy)["architectures"] == ["SCMP_ARCH_X86_64"]


@pytest.mark.parametrize(
    "name", ["ptrace", "mount", "bpf", "io_uring_setup", "keyctl", "unshare", "userfaultfd"]
)
def test_default_profile_does_not_allow(policy: Policy, name: str) -> None:
    assert name not in allowed_names(render_oci_seccomp(policy))


def test_clone_is_allowed_only_without_namespace_flags(policy: Policy) -> None:
    (rule,) = rules_for(render_oci_seccomp(policy), "clone")
    assert rule["args"] == [
        {"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]


def test_fork_allowance_zero_allows_threads_only() -> None:
    profile = render_oci_seccomp(parse_policy("fork_allowance: 0"))
    (rule,) = rules_for(profile, "clone")
    assert rule["args"][0]["value"] == CLONE_NAMESPACE_FLAGS | CLONE_THREAD
    assert rule["args"][0]["valueTwo"] == CLONE_THREAD
    assert not {"fork", "vfork"} & allowed_names(profile)


def test_socket_is_allowed_for_unix_inet_inet6_netlink_only(policy: Policy) -> None:
    families = {
        rule["args"][0]["value"] for rule in rules_for(render_oci_seccomp(policy), "socket")
    }
    assert families == {1, 2, 10, 16}  # so AF_PACKET 17, AF_ALG 38, AF_VSOCK 40 are denied


def test_argument_checked_syscalls_are_never_allowed_unconditionally(policy: Policy) -> None:
    unconditional = render_oci_seccomp(policy)["syscalls"][0]
    assert not {"clone", "socket", "socketpair", "personality"} & set(unconditional["names"])


def test_syscall_a_policy_adds_is_rendered() -> None:
    profile = render_oci_seccomp(parse_policy("diff_to_default: true\nallowed_syscalls: [mbind]"))
    assert "mbind" in allowed_names(profile)


def test_oci_seccomp_matches_the_oci_schema(policy: Policy) -> None:
    assert oci_seccomp_shape_problems(render_oci_seccomp(policy)) == []


def test_docker_profile_matches_the_oci_schema(policy: Policy) -> None:
    assert oci_seccomp_shape_problems(render_docker_profile(policy)) == []


def test_docker_profile_has_the_same_rules_as_the_oci_spec(policy: Policy) -> None:
    assert render_docker_profile(policy) == render_oci_seccomp(policy)


def test_rendering_is_deterministic_json(policy: Policy) -> None:
    assert json.dumps(render_oci_seccomp(policy)) == json.dumps(render_oci_seccomp(policy))
