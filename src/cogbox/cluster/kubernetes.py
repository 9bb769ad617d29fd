"""Kubernetes manifests for cogbox, on paper: the manager and a pod template per session image.

A pure function of its inputs (`render_manifests`), like the jail's renderers. What it renders
is checked offline (the API schemas, strictly, and the Kubernetes Python client's models) and
its seccomp profile is loaded by containerd; no Kubernetes code path of cogbox uses these yet
(there is no Kubernetes session backend), see docs/kubernetes.md.

    Namespace, ServiceAccount + Role + RoleBinding   the manager may manage pods in its namespace
    PersistentVolumeClaim, Deployment, Service      the manager (`cogbox serve`), its data dir,
                                                    its database URL from a Secret it does not
                                                    render (credentials stay out of manifests)
    RuntimeClass                                    gVisor (`runsc` handler) for session pods
    ConfigMap + DaemonSet                           the Localhost seccomp profiles, copied onto
                                                    every node's <kubelet root>/seccomp/cogbox/
    per image: PodTemplate, NetworkPolicy           the session pod (jail.kubernetes fragment:
                                                    uid 1000, read-only root, no capabilities,
                                                    the policy's resources) and deny-all traffic
"""

import json
from dataclasses import dataclass, field
from typing import Any

from cogbox.jail.kubernetes import render_kubernetes
from cogbox.jail.policy import Policy

MANAGER = "cogbox-manager"
PORT = 8090
DATA_DIR = "/var/lib/cogbox"
PROFILES = "cogbox-seccomp-profiles"
KUBELET_SECCOMP_DIR = "/var/lib/kubelet/seccomp"  # the kubelet's default --root-dir + seccomp
MANAGED_BY = {"app.kubernetes.io/managed-by": "cogbox"}


@dataclass(frozen=True)
class SessionImage:
    """A session image: its name, its container image reference, and its jail policy."""

    name: str
    reference: str
    policy: Policy


@dataclass(frozen=True)
class Deployment:
    """What differs between installations."""

    namespace: str = "cogbox"
    manager_image: str = "cogbox/manager:latest"
    database_secret: str = "cogbox-database"  # a Secret with key `url` (SQLAlchemy URL)
    runtime_class: str | None = "gvisor"  # None: session pods use the node's default runtime
    data_size: str = "20Gi"
    installer_image: str = "busybox:1.36"
    kubelet_seccomp_dir: str = KUBELET_SECCOMP_DIR
    sessions: tuple[SessionImage, ...] = field(default_factory=tuple)


def render_manifests(deployment: Deployment) -> list[dict[str, Any]]:
    """Every manifest, in an order `kubectl apply -f` accepts (namespace first)."""
    ns = deployment.namespace
    fragments = {
        s.name: render_kubernetes(s.policy, image=s.reference, profile_name=s.name)
        for s in deployment.sessions
    }
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": MANAGED_BY}},
        *_manager(deployment),
        *_profile_installer(deployment, fragments),
    ]
    if deployment.runtime_class is not None:
        manifests.append(
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": deployment.runtime_class, "labels": MANAGED_BY},
                "handler": "runsc",
            }
        )
    for session in deployment.sessions:
        manifests.extend(_session(deployment, session, fragments[session.name]))
    return manifests


def _meta(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, **labels}}


def _manager(deployment: Deployment) -> list[dict[str, Any]]:
    ns = deployment.namespace
    selector = {"app.kubernetes.io/name": MANAGER}
    container = {
        "name": "manager",
        "image": deployment.manager_image,
        "args": ["cogbox", "serve", "--host", "0.0.0.0", "--port", str(PORT)],
        "env": [
            {"name": "COGBOX_DATA_DIR", "value": DATA_DIR},
            {
                "name": "COGBOX_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": deployment.database_secret, "key": "url"}},
            },
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(MANAGER, ns),
        },
        {
            # What a Kubernetes session backend would need: session pods, their logs, and
            # exec for the kernel channel, in this namespace only.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(MANAGER, ns),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["podtemplates"], "verbs": ["get", "list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(MANAGER, ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MANAGER},
            "subjects": [{"kind": "ServiceAccount", "name": MANAGER, "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta("cogbox-data", ns),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": deployment.data_size}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(MANAGER, ns, **selector),
            "spec": {
                # One manager: sessions' state lives in its process and its data volume.
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**MANAGED_BY, **selector}},
                    "spec": {
                        "serviceAccountName": MANAGER,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "runAsGroup": 1000,
                            "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": "cogbox-data"}}
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(MANAGER, ns),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def _profile_installer(
    deployment: Deployment, fragments: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The profiles as a ConfigMap, and a DaemonSet that copies them onto every node.

    The kubelet reads a Localhost profile from <root-dir>/seccomp/<localhostProfile> on the
    node itself, and a pod naming a missing profile fails to start (CreateContainerError), so
    the files must be there before any session pod lands on a node.
    """
    ns = deployment.namespace
    selector = {"app.kubernetes.io/name": "cogbox-seccomp-installer"}
    data = {
        f"{name}.json": json.dumps(fragment["seccompProfile"]["profile"], indent=2)
        for name, fragment in fragments.items()
    }
    target = f"{deployment.kubelet_seccomp_dir}/cogbox"
    locked = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(PROFILES, ns), "data": data},
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("cogbox-seccomp-installer", ns, **selector),
            "spec": {
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**MANAGED_BY, **selector}},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "initContainers": [
                            {
                                "name": "install",
                                "image": deployment.installer_image,
                                # root only to write the node's kubelet folder; no capabilities
                                "securityContext": {**locked, "runAsUser": 0},
                                "command": ["sh", "-c", "cp /profiles/*.json /node-seccomp/"],
                                "volumeMounts": [
                                    {"name": "profiles", "mountPath": "/profiles"},
                                    {"name": "node-seccomp", "mountPath": "/node-seccomp"},
                                ],
                            }
                        ],
                        "containers": [
                            {
                                "name": "pause",
                                "image": "registry.k8s.io/pause:3.9",
                                "securityContext": {**locked, "runAsUser": 65535},
                                "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}},
                            }
                        ],
                        "volumes": [
                            {"name": "profiles", "configMap": {"name": PROFILES}},
                            {
                                "name": "node-seccomp",
                                "hostPath": {"path": target, "type": "DirectoryOrCreate"},
                            },
                        ],
                    },
                },
            },
        },
    ]


def _session(
    deployment: Deployment, session: SessionImage, fragment: dict[str, Any]
) -> list[dict[str, Any]]:
    ns = deployment.namespace
    template = json.loads(json.dumps(fragment["pod"]))  # a copy: the fragment stays as rendered
    if deployment.runtime_class is not None:
        template["spec"]["runtimeClassName"] = deployment.runtime_class
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {
                **_meta(f"cogbox-session-{session.name}", ns),
                # What the pod cannot enforce of the jail policy, for whoever reads this.
                "annotations": {"cogbox/not-enforced": json.dumps(fragment["notEnforced"])},
            },
            "template": template,
        }
    ]
    if "networkPolicy" in fragment:
        network = json.loads(json.dumps(fragment["networkPolicy"]))
        network["metadata"] = {**network["metadata"], "namespace": ns, "labels": MANAGED_BY}
        manifests.append(network)
    return manifests
