"""The native API's request and response bodies (pydantic: validated in, documented out)."""

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cogbox.service.db import EventRecord, SessionRecord
from cogbox.service.status import SessionStatus
from cogbox.sizes import format_size, parse_size

MIN_SESSION_MEMORY = 64 << 20  # a kernel needs about 50 MiB before it runs anything
MAX_SESSION_MEMORY = 1 << 40


def session_memory(value: object) -> int:
    """A session's memory limit in bytes, from bytes or a size like "1g"; ValueError if it
    is not a size or out of the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"memory must be a number of bytes or a size like '1g', got {value!r}")
    size = parse_size(value)
    if not MIN_SESSION_MEMORY <= size <= MAX_SESSION_MEMORY:
        raise ValueError(
            f"memory must be between {format_size(MIN_SESSION_MEMORY)} and "
            f"{format_size(MAX_SESSION_MEMORY)}, got {value!r}"
        )
    return size


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSessionBody(_Strict):
    image: str = Field(min_length=1, max_length=256, examples=["python"])
    name: str | None = Field(default=None, examples=["my-session"])
    idle_timeout: float | None = Field(default=None, gt=0, le=10**7)
    max_lifetime: float | None = Field(default=None, gt=0, le=10**8)
    env: dict[str, str] = Field(default_factory=dict)
    memory: int | str | None = Field(
        default=None,
        description="the session's memory limit, in bytes or as a size like '1g' "
        f"({format_size(MIN_SESSION_MEMORY)} to {format_size(MAX_SESSION_MEMORY)}); "
        "default: the image policy's. It counts against the keypair's memory cap.",
        examples=["1g"],
    )
    mounts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="storage folders to mount, as Backend.AI's `-v`: NAME (at /home/work/NAME) "
        "or NAME=PATH (relative to /home/work, or absolute under it)",
        examples=[["data", "models=inputs/models"]],
    )
    cpus: float | None = Field(
        default=None,
        ge=0.01,
        le=1024,
        description="cores for the jail's cpu quota (at most the host's); default: the "
        "image policy's",
        examples=[0.5],
    )
    runtime: str = Field(
        default="runc",
        description="the OCI runtime of the session's jail: runc, or runsc (gVisor, a "
        "user-space kernel between the code and the host's)",
        examples=["runsc"],
    )
    bootstrap_script: str | None = Field(
        default=None,
        max_length=64 << 10,
        description="a shell script run in /home/work before the first cell; the create "
        "fails (422 bootstrap-failed) if it exits non-zero",
    )

    output_limit: int | None = Field(
        default=None,
        gt=0,
        le=1 << 30,
        description="characters of one run's output sent to the client (default: the "
        "service's); what it drops is still in the session's log",
    )
    type: Literal["interactive", "batch"] = Field(
        default="interactive",
        description="batch: a job that runs `startup_command` once in /home/work and ends "
        "by itself, its result SUCCESS or FAILURE by exit status; it waits `pending` for "
        "`depends` and for room under the keypair's limits",
    )
    startup_command: str | None = Field(
        default=None, max_length=100_000, examples=["python train.py"]
    )
    depends: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="sessions (ids or names) a job starts after, once all have succeeded",
    )
    batch_timeout: float | None = Field(default=None, gt=0, le=10**7)

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: int | str | None) -> int | None:
        return None if value is None else session_memory(value)

    @property
    def memory_bytes(self) -> int | None:
        """`memory` in bytes: the validator has converted a size string already."""
        assert not isinstance(self.memory, str)
        return self.memory


class ExecuteBody(_Strict):
    code: str = Field(max_length=1_000_000, examples=["print(6 * 7)"])
    timeout: float | None = Field(default=None, gt=0, le=86400)


class BatchBody(_Strict):
    build: str | None = Field(default=None, max_length=100_000)
    exec: str = Field(min_length=1, max_length=100_000, examples=["python main.py"])
    timeout: float | None = Field(default=None, gt=0, le=86400)


_STATUSES = ", ".join(list(SessionStatus)[:-1]) + f" or {list(SessionStatus)[-1]}"


class SessionInfo(BaseModel):
    id: str
    name: str
    image: str
    status: str = Field(description=_STATUSES)
    status_info: str
    progress: str = Field(
        default="",
        description="while building: the image build's current step, e.g. "
        "'install Python packages'",
    )
    created_at: str
    status_changed_at: str
    terminated_at: str | None
    idle_timeout: float
    max_lifetime: float
    memory_bytes: int | None = Field(description="the memory limit of the session's jail")
    busy: bool
    last_used_at: str | None
    type: str = Field(default="interactive", description="interactive or batch (a job)")
    result: str | None = Field(
        default=None, description="a job's outcome once it ended: SUCCESS or FAILURE"
    )
    exit_code: int | None = Field(default=None, description="a job's command's exit status")
    startup_command: str | None = None
    dependencies: list[str] = Field(default_factory=list, description="ids a job waits for")


class PoolInfo(BaseModel):
    image: str
    size: int = Field(description="started kernels the pool keeps ready")
    ready: int = Field(description="how many are ready now")


class PoolList(BaseModel):
    pools: list[PoolInfo]


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class EventInfo(BaseModel):
    at: str
    kind: str = Field(
        description="created, building, image_build (one per build step, its text in "
        "message), starting, running, died, limit_hit, idle_reaped, lost, ..."
    )
    reason: str
    message: str


class EventList(BaseModel):
    events: list[EventInfo]


class ExecuteResult(BaseModel):
    status: str = Field(description="the terminal event's kind and status, e.g. finished/ok")
    events: list[dict[str, Any]] = Field(description="cogbox events, as event_to_dict gives")


class FileInfo(BaseModel):
    name: str
    kind: str
    size: int
    mtime: float


class FileList(BaseModel):
    files: list[FileInfo]


class Problem(BaseModel):
    error: str
    status: int
    type: str
    title: str
    msg: str


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def session_info(
    record: SessionRecord, busy: bool, last_used: float | None, progress: str = ""
) -> SessionInfo:
    return SessionInfo(
        id=record.id,
        name=record.name,
        image=record.image,
        status=record.status,
        status_info=record.status_info,
        progress=progress,
        created_at=iso(record.created_at) or "",
        status_changed_at=iso(record.status_changed_at) or "",
        terminated_at=iso(record.terminated_at),
        idle_timeout=record.idle_timeout,
        max_lifetime=record.max_lifetime,
        memory_bytes=record.memory_bytes,
        busy=busy,
        last_used_at=iso(last_used),
        type=record.session_type or "interactive",
        result=record.result,
        exit_code=record.exit_code,
        startup_command=record.startup_command,
        dependencies=json.loads(record.dependencies) if record.dependencies else [],
    )


def event_info(record: EventRecord) -> EventInfo:
    return EventInfo(
        at=iso(record.at) or "", kind=record.kind, reason=record.reason, message=record.message
    )
