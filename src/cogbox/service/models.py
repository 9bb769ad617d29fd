"""The native API's request and response bodies (pydantic: validated in, documented out)."""

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cogbox.service.db import EventRecord, SessionRecord


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSessionBody(_Strict):
    image: str = Field(min_length=1, max_length=256, examples=["python"])
    name: str | None = Field(default=None, examples=["my-session"])
    idle_timeout: float | None = Field(default=None, gt=0, le=10**7)
    max_lifetime: float | None = Field(default=None, gt=0, le=10**8)
    env: dict[str, str] = Field(default_factory=dict)


class ExecuteBody(_Strict):
    code: str = Field(max_length=1_000_000, examples=["print(6 * 7)"])
    timeout: float | None = Field(default=None, gt=0, le=86400)


class BatchBody(_Strict):
    build: str | None = Field(default=None, max_length=100_000)
    exec: str = Field(min_length=1, max_length=100_000, examples=["python main.py"])
    timeout: float | None = Field(default=None, gt=0, le=86400)


class SessionInfo(BaseModel):
    id: str
    name: str
    image: str
    status: str = Field(description="building, starting, running, dead, terminated, lost or error")
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
    busy: bool
    last_used_at: str | None


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
        busy=busy,
        last_used_at=iso(last_used),
    )


def event_info(record: EventRecord) -> EventInfo:
    return EventInfo(
        at=iso(record.at) or "", kind=record.kind, reason=record.reason, message=record.message
    )
