"""The policy file as written: pydantic models of policy.yml that refuse unknown fields.

Parsed by `parse_policy` (policy.py), which then resolves it into a `Policy`.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from cogbox.jail.policy_model import ReadonlyBind
from cogbox.jail.policy_values import (
    EnvName,
    EnvValue,
    OptionalCpus,
    OptionalSeconds,
    OptionalSize,
    OptionalWholeSeconds,
    RequiredSize,
)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WhitelistPathsDoc(_Document):
    OP_OPEN: list[str] | None = None
    OP_ACCESS: list[str] | None = None
    OP_EXEC: list[str] | None = None
    OP_STAT: list[str] | None = None
    OP_CHMOD: list[str] | None = None


class _LimitsDoc(_Document):
    memory: RequiredSize | None = None
    cpus: OptionalCpus = None
    pids: Annotated[StrictInt, Field(ge=1)] | None = None
    nofile: Annotated[StrictInt, Field(ge=16, le=1 << 20)] | None = None
    file_size: OptionalSize = None
    workdir_quota: OptionalSize = None
    tmp_size: RequiredSize | None = None
    shm_size: RequiredSize | None = None
    cpu_time_seconds: OptionalWholeSeconds = None
    wall_time_seconds: OptionalSeconds = None


# YAML key in `limits:` -> attribute of `Limits`.
_LIMIT_ATTRIBUTES = {
    "memory": "memory_bytes",
    "cpus": "cpus",
    "pids": "pids",
    "nofile": "nofile",
    "file_size": "fsize_bytes",
    "workdir_quota": "workdir_quota_bytes",
    "tmp_size": "tmp_size_bytes",
    "shm_size": "shm_size_bytes",
    "cpu_time_seconds": "cpu_time_seconds",
    "wall_time_seconds": "wall_time_seconds",
}


class _MountsDoc(_Document):
    readonly_binds: list[ReadonlyBind] = []


class _PolicyDoc(_Document):
    whitelist_paths: _WhitelistPathsDoc | None = None
    exec_allowance: StrictInt = -1
    fork_allowance: StrictInt = -1
    max_child_procs: StrictInt | None = None
    extra_envs: dict[EnvName, EnvValue] = {}
    preserved_env_keys: list[EnvName] = []
    allowed_syscalls: list[str] = []
    diff_to_default: StrictBool = False
    limits: _LimitsDoc | None = None
    network: Literal["none", "host"] = "none"
    mounts: _MountsDoc | None = None
    gpu: StrictBool = False
