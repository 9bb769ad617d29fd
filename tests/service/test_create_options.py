"""`parse_create_options`: Backend.AI's create body into a session's options; what cogbox
cannot honour is refused naming the option (pure: no service needed), and the native API
refuses the same variables."""

from typing import Any

import pytest

from cogbox.jail.policy import default_policy
from cogbox.service.create_options import parse_create_options, session_policy
from cogbox.service.errors import ServiceError
from tests.service.support import Client

# What backend.ai-client 23.3's `session create python` sends with no options given.
DEFAULT_BODY: dict[str, Any] = {
    "tag": None,
    "name": "pysdk-x",
    "config": {
        "mounts": [],
        "environ": {},
        "resources": {},
        "resource_opts": {},
        "scalingGroup": None,
        "mount_map": {},
        "preopen_ports": None,
    },
    "dependencies": None,
    "callback_url": None,
    "architecture": "x86_64",
    "clusterSize": 1,
    "clusterMode": "single-node",
    "starts_at": None,
    "bootstrap_script": None,
    "owner_access_key": None,
    "domain": "default",
    "group": "default",
    "type": "interactive",
    "enqueueOnly": False,
    "maxWaitSeconds": 0,
    "reuseIfExists": True,
    "startupCommand": None,
    "image": "python",
}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**DEFAULT_BODY, "config": dict(DEFAULT_BODY["config"])}
    for key, value in changes.items():
        if key.startswith("config_"):
            body["config"][key[len("config_") :]] = value
        else:
            body[key] = value
    return body


def _refusal(body: dict[str, Any]) -> str:
    with pytest.raises(ServiceError) as raised:
        parse_create_options(body)
    assert 400 <= raised.value.status < 500
    return raised.value.message


def test_the_clients_defaults_are_accepted() -> None:
    options = parse_create_options(DEFAULT_BODY)
    assert (options.image, options.env, options.cpus, options.bootstrap_script) == (
        "python", {}, None, None
    )  # fmt: skip


def test_options_are_parsed() -> None:
    options = parse_create_options(
        _with(
            image="lablup/cntk:latest",
            config_environ={"FOO": "bar"},
            config_resources={"cpu": "0.5", "mem": "1g"},
            bootstrap_script="echo hi\n",
        )
    )
    assert (options.image, options.env, options.cpus, options.memory_bytes) == (
        "cntk", {"FOO": "bar"}, 0.5, 1 << 30
    )  # fmt: skip
    assert options.bootstrap_script == "echo hi\n"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"config_resources": {"cuda.shares": "1"}}, "config.resources.cuda.shares"),
        ({"config_resources": {"tpu.device": "1"}}, "config.resources.tpu.device"),
        ({"config_resources": {"cpu": "0"}}, "config.resources.cpu"),
        ({"config_resources": {"cpu": "100000"}}, "config.resources.cpu"),
        ({"image": "python:3.9"}, "'3.9'"),
        ({"image": "python@sha256:00"}, "digest"),
        ({"clusterSize": 2}, "clusterSize"),
        ({"architecture": "riscv64"}, "architecture"),
        ({"config_scalingGroup": "gpu-nodes"}, "config.scalingGroup"),
        ({"starts_at": "10m"}, "starts_at"),
        ({"config_preopen_ports": [8080]}, "config.preopen_ports"),
        ({"config_environ": {"HOME": "/tmp"}}, "config.environ.HOME"),
        ({"config_environ": {"JPY_PARENT_PID": "1"}}, "config.environ.JPY_PARENT_PID"),
        ({"config_environ": {"COGBOX_X": "1"}}, "config.environ.COGBOX_X"),
        ({"config_environ": {"1BAD": "1"}}, "'1BAD'"),
        ({"config_environ": {"A": "x\u0000y"}}, "config.environ.A"),
        ({"bootstrap_script": 5}, "bootstrap_script"),
    ],
)
def test_what_cogbox_cannot_honour_is_refused_naming_it(
    changes: dict[str, Any], named: str
) -> None:
    assert named in _refusal(_with(**changes))


def test_session_policy_preserves_requested_variables_and_sets_the_cpu_quota() -> None:
    policy = session_policy(default_policy(), {"FOO": "bar", "PATH": "/x"}, None, 0.5)
    assert policy.limits.cpus == 0.5
    assert policy.preserved_env_keys.count("FOO") == 1 and "PATH" in policy.preserved_env_keys


def test_the_native_api_refuses_a_reserved_variable_by_name(alice: Client) -> None:
    response = alice.request("POST", "/v1/sessions", json={"image": "python", "env": {"HOME": "/"}})
    assert (response.status_code, "env.HOME" in response.json()["msg"]) == (400, True)
