"""The Kubernetes fragment: a Localhost seccomp profile and a locked-down pod."""

from typing import Any

import pytest

from cogbox.jail.kubernetes import render_kubernetes
from cogbox.jail.policy import Policy, default_policy, parse_policy
from cogbox.jail.seccomp import render_docker_profile


def render(policy: Policy | None = None) -> dict[str, Any]:
    return render_kubernetes(policy or default_policy(), image="cogbox/cntk:1", profile_name="cntk")


def container(rendered: dict[str, Any]) -> dict[str, Any]:
    (only,) = rendered["pod"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_pod_uses_the_localhost_seccomp_profile() -> None:
    expected = {"type": "Localhost", "localhostProfile": "cogbox/cntk.json"}
    rendered = render()
    assert rendered["pod"]["spec"]["securityContext"]["seccompProfile"] == expected
    assert container(rendered)["securityContext"]["seccompProfile"] == expected


def test_profile_file_is_the_docker_profile() -> None:
    assert render()["seccompProfile"] == {
        "path": "cogbox/cntk.json",
        "profile": render_docker_profile(default_policy()),
    }


def test_container_runs_as_uid_1000_without_privileges() -> None:
    context = container(render())["securityContext"]
    assert context == context | {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }


def test_resource_limits_come_from_the_policy() -> None:
    policy = parse_policy("limits: {memory: 4g, cpus: 2, workdir_quota: 10g}")
    assert container(render(policy))["resources"]["limits"] == {
        "memory": "4Gi",
        "cpu": "2000m",
        "ephemeral-storage": "10Gi",
    }


def test_wall_time_becomes_the_active_deadline() -> None:
    pod = render(parse_policy("limits: {wall_time_seconds: 600}"))["pod"]
    assert pod["spec"]["activeDeadlineSeconds"] == 600


def test_network_none_renders_a_deny_all_network_policy() -> None:
    spec = render()["networkPolicy"]["spec"]
    assert (spec["policyTypes"], "ingress" in spec, "egress" in spec) == (
        ["Ingress", "Egress"],
        False,
        False,
    )


def test_network_host_renders_no_network_policy() -> None:
    assert "networkPolicy" not in render(parse_policy("network: host"))


def test_limits_a_pod_cannot_express_are_listed_as_not_enforced() -> None:
    gaps = " ".join(render(parse_policy("max_child_procs: 32"))["notEnforced"])
    assert "pids limit 32" in gaps
    assert "open files" in gaps


def test_profile_name_must_be_a_plain_file_name() -> None:
    with pytest.raises(ValueError):
        render_kubernetes(default_policy(), image="x", profile_name="../escape")
