"""`cogbox kubernetes render`: every manifest passes the API schemas strictly and survives a
round trip through the Kubernetes Python client's models; the session pod is locked down.
(Offline checks only: no API server, see docs/kubernetes.md.)"""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client import ApiClient
from kubernetes.utils import parse_quantity

from cogbox.cli import cli
from cogbox.cluster.kubernetes import Deployment, SessionImage, render_manifests
from cogbox.config import REPO_IMAGES_DIR
from cogbox.jail.policy import load_policy

# The oldest Kubernetes still maintained when this was written, and the newest the validator
# knows: a manifest must be valid for both.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
REFERENCE = "registry.example/cogbox/python@sha256:" + "0" * 64


def rendered(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["kubernetes", "render", *args])
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.output) if doc]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def session_pod(manifests: list[dict[str, Any]], name: str = "python") -> dict[str, Any]:
    (template,) = [
        m
        for m in by_kind(manifests, "PodTemplate")
        if m["metadata"]["name"] == f"cogbox-session-{name}"
    ]
    pod = template["template"]
    assert isinstance(pod, dict)
    return pod


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return rendered()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_strict_schema_validation(
    manifests: list[dict[str, Any]], version: str
) -> None:
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_rejects_a_field_the_api_does_not_have(
    manifests: list[dict[str, Any]],
) -> None:
    broken = json.loads(json.dumps(session_pod(manifests)))
    broken["spec"]["containers"][0]["securityContext"]["runAsUserr"] = 1000
    template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "x"},
        "template": broken,
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(template, VERSIONS[-1], strict=True)


def test_every_manifest_round_trips_through_the_python_clients_models(
    manifests: list[dict[str, Any]],
) -> None:
    client = ApiClient()
    for manifest in manifests:
        model = client._ApiClient__deserialize(manifest, f"V1{manifest['kind']}")  # type: ignore[attr-defined]
        # A field the model does not know (or a wrong type) would be lost or changed here.
        assert client.sanitize_for_serialization(model) == manifest, manifest["kind"]


def test_the_session_container_is_uid_1000_read_only_without_capabilities(
    manifests: list[dict[str, Any]],
) -> None:
    (container,) = session_pod(manifests)["spec"]["containers"]
    context = container["securityContext"]
    assert (
        context["runAsUser"],
        context["runAsNonRoot"],
        context["readOnlyRootFilesystem"],
        context["allowPrivilegeEscalation"],
        context["capabilities"],
    ) == (1000, True, True, False, {"drop": ["ALL"]})


def test_the_session_pod_runs_under_gvisor_and_its_localhost_profile(
    manifests: list[dict[str, Any]],
) -> None:
    spec = session_pod(manifests)["spec"]
    (runtime_class,) = by_kind(manifests, "RuntimeClass")
    assert (spec["runtimeClassName"], runtime_class["handler"]) == ("gvisor", "runsc")
    assert spec["securityContext"]["seccompProfile"] == {
        "type": "Localhost",
        "localhostProfile": "cogbox/python.json",
    }


def test_the_installer_puts_each_profile_where_the_kubelet_reads_localhost_profiles(
    manifests: list[dict[str, Any]],
) -> None:
    (config_map,) = by_kind(manifests, "ConfigMap")
    (daemon_set,) = by_kind(manifests, "DaemonSet")
    volumes = {v["name"]: v for v in daemon_set["spec"]["template"]["spec"]["volumes"]}
    assert volumes["profiles"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["node-seccomp"]["hostPath"]["path"] == "/var/lib/kubelet/seccomp/cogbox"
    profile = json.loads(config_map["data"]["python.json"])
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"


def test_the_session_resources_are_the_policys_limits(manifests: list[dict[str, Any]]) -> None:
    limits = load_policy(REPO_IMAGES_DIR / "python" / "policy.yml").limits
    (container,) = session_pod(manifests)["spec"]["containers"]
    resources = container["resources"]
    assert parse_quantity(resources["limits"]["memory"]) == limits.memory_bytes
    if limits.cpus is not None:
        assert parse_quantity(resources["limits"]["cpu"]) == Decimal(str(limits.cpus))
    assert resources["requests"] == resources["limits"]


def test_session_pods_get_a_deny_all_network_policy(manifests: list[dict[str, Any]]) -> None:
    labels = session_pod(manifests)["metadata"]["labels"]
    (policy,) = [
        p
        for p in by_kind(manifests, "NetworkPolicy")
        if p["metadata"]["name"] == "cogbox-python-isolated"
    ]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    assert (spec["policyTypes"], "ingress" in spec, "egress" in spec) == (
        ["Ingress", "Egress"],
        False,
        False,
    )


def test_the_manager_reads_its_database_url_from_a_secret(manifests: list[dict[str, Any]]) -> None:
    (deployment,) = by_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["COGBOX_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "cogbox-database", "key": "url"}
    }
    assert not by_kind(manifests, "Secret")  # the URL's password never lands in a manifest
    (service,) = by_kind(manifests, "Service")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_a_session_image_reference_and_no_runtime_class_are_honoured() -> None:
    manifests = rendered("--session", f"python={REFERENCE}", "--runtime-class", "none")
    (container,) = session_pod(manifests)["spec"]["containers"]
    assert container["image"] == REFERENCE
    assert "runtimeClassName" not in session_pod(manifests)["spec"]
    assert not by_kind(manifests, "RuntimeClass") and len(by_kind(manifests, "PodTemplate")) == 1


def test_an_unknown_session_image_is_refused_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["kubernetes", "render", "--session", "nope"])
    assert result.exit_code == 2 and "--session" in result.output


def test_render_is_a_pure_function_of_its_inputs() -> None:
    policy = load_policy(REPO_IMAGES_DIR / "python" / "policy.yml")
    deployment = Deployment(sessions=(SessionImage("python", REFERENCE, policy),))
    assert render_manifests(deployment) == render_manifests(deployment)


def test_the_rendered_yaml_passes_the_kubernetes_validate_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["kubernetes", "render"])
    rendered_file = tmp_path / "cogbox.yaml"
    rendered_file.write_text(result.output)
    command = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(command), "--strict", "--quiet", str(rendered_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
