"""The options of Backend.AI's `POST /session` body, validated into what a session gets.

Backend.AI's client sends every option in each create body, most at a default (`clusterSize:
1`, `architecture: "x86_64"`, `config.preopen_ports: null`, ...). A default is accepted; a
value cogbox cannot honour is refused with a 400 naming the option, never ignored: a user who
asked for a GPU, a second node or an image tag must not get a session that quietly lacks it.

The environment (`config.environ`, the client's `-e KEY=VAL`) reaches the kernel and batch
commands, except the variables the jail and its kernel need for themselves
(`RESERVED_ENV_NAMES`, `RESERVED_ENV_PREFIXES`) and those the image's policy sets itself
(its `extra_envs`, checked by `check_env_against_policy`). Why each is refused:

- `HOME`, `USER`, `SHELL`: the jail's work user (uid 1000, `work`, home `/home/work`). Files
  up- and downloaded, the kernel's own state (~/.ipython) and the quota of /home/work assume it.
- `JPY_*`: ipykernel's launcher protocol; `JPY_PARENT_PID` makes the kernel exit at once in
  the jail's PID namespace (it cannot see its parent).
- `COGBOX_*`: the service's own settings; none may be steered by a tenant.
- `LD_PRELOAD`, `LD_AUDIT`: they load code into every process of the jail before its
  `main`, PID 1 (tini, which reports the kernel's exit and reason) included.

Security does not rest on this list (code in the jail may set any variable for itself); it
keeps a session's own start and reporting honest. `PATH`, `PYTHONPATH`, `LD_LIBRARY_PATH`
and the rest pass: researchers need them, and a bad value breaks only their own code.
"""

import math
import os
import platform
import re
from dataclasses import dataclass
from typing import Any

from cogbox.jail.policy import Policy
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.models import session_memory

RESERVED_ENV_NAMES = frozenset({"HOME", "USER", "SHELL", "LD_PRELOAD", "LD_AUDIT"})
RESERVED_ENV_PREFIXES = ("COGBOX_", "JPY_")
MAX_ENV_VARIABLES = 128
MAX_ENV_BYTES = 64 << 10
MAX_BOOTSTRAP_BYTES = 64 << 10
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HONOURED_TAGS = ("", "latest")
_ARCHITECTURES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}


def unsupported(option: str, message: str) -> ServiceError:
    """400 naming an option the service cannot honour (never silently ignored)."""
    return ServiceError(400, "unsupported-option", f"'{option}' is not supported: {message}")


@dataclass(frozen=True)
class CreateOptions:
    """What a create body asks of its session, beyond its name."""

    image: str
    env: dict[str, str]
    memory_bytes: int | None
    cpus: float | None
    bootstrap_script: str | None


def parse_create_options(body: dict[str, Any]) -> CreateOptions:
    """The options of a Backend.AI create body; 400 naming the first one that is invalid or
    that cogbox cannot honour."""
    config = _object(body.get("config"), "config")
    _refuse_unsupported(body, config)
    resources = _object(config.get("resources"), "config.resources")
    memory, cpus = _resources(resources)
    return CreateOptions(
        image=image_name(body.get("image") or body.get("lang")),
        env=session_env(config.get("environ")),
        memory_bytes=memory,
        cpus=cpus,
        bootstrap_script=_bootstrap(body.get("bootstrap_script")),
    )


def image_name(value: object) -> str:
    """The cogbox image an image reference names: `cntk`, `cntk:latest`, `lablup/cntk`,
    `registry:5000/lablup/cntk`. A tag other than `latest`, or a digest, is refused: each
    image has one version here, and a user who asked for `cntk:2.6` must not get 2.7."""
    if not isinstance(value, str) or not value:
        raise bad_request("'image' is required: the name of an image, e.g. 'python'")
    if "@" in value:
        raise unsupported("image", f"{value!r} names a digest; give the image's name only")
    last = value.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    if tag not in _HONOURED_TAGS:
        raise unsupported(
            "image",
            f"the tag {tag!r} of {value!r}: cogbox serves one version of each image; "
            f"ask for {name!r} or '{name}:latest'",
        )
    if not name:
        raise bad_request(f"'image' {value!r} names no image")
    return name


def session_env(value: object, field: str = "config.environ") -> dict[str, str]:
    """`config.environ` (or the native API's `env`: `field`) checked: names, sizes, and
    none the jail keeps for itself."""
    environ = _object(value, field)
    if len(environ) > MAX_ENV_VARIABLES:
        raise bad_request(f"'{field}' holds {len(environ)} variables: at most {MAX_ENV_VARIABLES}")
    total = 0
    for key, text in environ.items():
        if not _ENV_NAME.fullmatch(key):
            raise bad_request(
                f"'{field}': {key!r} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if not isinstance(text, str) or "\0" in text:
            raise bad_request(f"'{field}.{key}' must be a string without NUL bytes")
        total += len(key) + len(text.encode())
        reason = reserved_env_reason(key)
        if reason:
            raise ServiceError(400, "reserved-env", f"'{field}.{key}' cannot be set: {reason}")
    if total > MAX_ENV_BYTES:
        raise bad_request(f"'{field}' holds {total:,} bytes: at most {MAX_ENV_BYTES:,}")
    return {str(k): str(v) for k, v in environ.items()}


def reserved_env_reason(name: str) -> str:
    """Why the jail keeps `name` for itself, or "" when a session may set it."""
    if name in ("HOME", "USER", "SHELL"):
        return "the jail's work user (uid 1000, 'work', home /home/work) needs it as it is"
    if name in ("LD_PRELOAD", "LD_AUDIT"):
        return "it would load code into every process of the jail, its PID 1 included"
    if name.startswith("JPY_"):
        return "it belongs to the kernel's launcher protocol (ipykernel)"
    if name.startswith("COGBOX_"):
        return "it belongs to the cogbox service"
    return ""


def check_env_against_policy(env: dict[str, str], policy: Policy, image: str) -> None:
    """Refuse a variable the image's policy sets itself (`extra_envs`): the policy has the
    last word, so the request would be silently overridden."""
    for key in env:
        if key in policy.extra_envs:
            raise ServiceError(
                400,
                "reserved-env",
                f"'config.environ.{key}' cannot be set: the jail policy of image {image!r} "
                f"sets it ({key}={policy.extra_envs[key]}) in its extra_envs",
            )


def _resources(resources: dict[str, Any]) -> tuple[int | None, float | None]:
    memory: int | None = None
    cpus: float | None = None
    for key, value in resources.items():
        if key == "mem":
            try:
                memory = session_memory(value)
            except ValueError as exc:
                raise bad_request(f"'config.resources.mem': {exc}") from exc
        elif key == "cpu":
            cpus = _cpus(value)
        elif key.startswith("cuda.") or key in ("cuda", "gpu", "rocm.device", "tpu.device"):
            raise unsupported(f"config.resources.{key}", _no_accelerators())
        else:
            raise unsupported(
                f"config.resources.{key}", "cogbox allocates only 'cpu' (cores) and 'mem'"
            )
    return memory, cpus


def _no_accelerators() -> str:
    """Why an accelerator resource is refused: GPUs come with an image here, not by count."""
    from cogbox.jail.gpu import NoGpuError, find_gpus

    try:
        has_gpu = find_gpus() is not None
    except NoGpuError:
        has_gpu = False
    if not has_gpu:
        return "this host is CPU-only: cogbox has no accelerators to give a session"
    return (
        "cogbox gives GPUs by image, not by count: a session of an image whose policy says "
        "`gpu: true` (keras-cuda) gets all of this host's GPUs"
    )


def _cpus(value: object) -> float:
    """Cores for the jail's cpu cgroup quota: a positive number, at most the host's."""
    try:
        cpus = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        cpus = math.nan
    if isinstance(value, bool) or not math.isfinite(cpus) or cpus <= 0:
        raise bad_request(f"'config.resources.cpu' must be a positive number of cores: {value!r}")
    return check_cpus(cpus, "config.resources.cpu")


def check_cpus(cpus: float, field: str) -> float:
    """`cpus` if this host can give that many cores (at least 0.01), else 400 naming `field`."""
    host = os.cpu_count() or 1
    if cpus > host:
        raise bad_request(f"'{field}' asks for {cpus:g} cores; this host has {host}")
    if cpus < 0.01:
        raise bad_request(f"'{field}' asks for {cpus:g} cores: at least 0.01")
    return cpus


def _bootstrap(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise bad_request("'bootstrap_script' must be the text of a shell script")
    if len(value.encode()) > MAX_BOOTSTRAP_BYTES:
        raise bad_request(f"'bootstrap_script' is longer than {MAX_BOOTSTRAP_BYTES:,} bytes")
    return value


def _refuse_unsupported(body: dict[str, Any], config: dict[str, Any]) -> None:
    """Options at a value cogbox cannot honour (each at its default passes)."""
    size = body.get("clusterSize", config.get("clusterSize"))
    if size not in (None, 1):
        raise unsupported("clusterSize", f"{size!r}: a session is one container here")
    mode = body.get("clusterMode")
    if mode not in (None, "single-node"):
        raise unsupported("clusterMode", f"{mode!r}: sessions run on a single node")
    arch = body.get("architecture")
    if arch is not None and platform.machine() not in _ARCHITECTURES.get(arch, (arch,)):
        raise unsupported("architecture", f"{arch!r}: this host is {platform.machine()}")
    group = config.get("scalingGroup")
    if group not in (None, "", "default"):
        raise unsupported("config.scalingGroup", f"{group!r}: there is one group, 'default'")
    for option in ("starts_at", "callback_url", "owner_access_key", "tag"):
        if body.get(option) not in (None, ""):
            raise unsupported(option, "cogbox has no such feature")
    for option in ("preopen_ports", "agentList", "resource_opts"):
        if config.get(option):
            raise unsupported(f"config.{option}", "cogbox has no such feature")


def _object(value: object, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{name}' must be an object")
    return value


def session_policy(
    policy: Policy, env: dict[str, str], memory_bytes: int | None, cpus: float | None
) -> Policy:
    """The image's policy for one session: its own memory and cpu limits, and its requested
    variables preserved (the jail passes only preserved keys and the policy's extra_envs;
    Backend.AI's `environ` "always bypasses the jail policy")."""
    limits: dict[str, Any] = {}
    if memory_bytes is not None:
        limits["memory_bytes"] = memory_bytes
    if cpus is not None:
        limits["cpus"] = cpus
    if limits:
        policy = policy.with_limits(**limits)
    extra = tuple(key for key in env if key not in policy.preserved_env_keys)
    if extra:
        policy = policy.model_copy(
            update={"preserved_env_keys": (*policy.preserved_env_keys, *extra)}
        )
    return policy
