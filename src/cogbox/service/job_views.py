"""Batch sessions (jobs) as Backend.AI's client speaks of them: the create body's job fields
in, the GraphQL session fields (`type`, `result`, `startup_command`, `dependencies`) out."""

import asyncio
from typing import TYPE_CHECKING, Any

from cogbox.service.db import SessionRecord
from cogbox.service.errors import bad_request
from cogbox.service.jobs import dependencies_of

if TYPE_CHECKING:
    from cogbox.service.sessions import SessionManager


def job_fields(body: dict[str, Any]) -> dict[str, Any]:
    """CreateRequest's job fields from a `POST /session` body: `type` ("interactive" or
    "batch"; `sessionType` is accepted too), `startupCommand`, `dependencies` (session ids
    or names) and `batchTimeout` (seconds). 400 naming the field when one is malformed."""
    kind = body.get("type") or body.get("sessionType") or "interactive"
    if not isinstance(kind, str) or kind.lower() not in ("interactive", "batch"):
        raise bad_request(f"'type' must be 'interactive' or 'batch', got {kind!r}")
    command = body.get("startupCommand") or body.get("startup_command")
    if command is not None and not isinstance(command, str):
        raise bad_request("'startupCommand' must be a string: the shell command a job runs")
    if command is not None and len(command) > 100_000:
        raise bad_request("'startupCommand' is longer than 100,000 characters")
    depends = body.get("dependencies") or []
    if not isinstance(depends, list) or not all(isinstance(d, str) and d for d in depends):
        raise bad_request("'dependencies' must be a list of session ids or names")
    if len(depends) > 64:
        raise bad_request(f"'dependencies' names {len(depends)} sessions: at most 64")
    timeout = body.get("batchTimeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise bad_request(f"'batchTimeout' must be a positive number of seconds, got {timeout!r}")
    return {
        "session_type": kind.lower(),
        "startup_command": command,
        "dependencies": list(depends),
        "batch_timeout": None if timeout is None else float(timeout),
    }


def gql_job_fields(record: SessionRecord) -> dict[str, Any]:
    """The GraphQL session fields that differ for a job."""
    if not record.is_batch:
        return {"startup_command": None}
    return {
        "type": "BATCH",
        "result": record.result or "UNDEFINED",
        "startup_command": record.startup_command,
        "dependencies": [{"id": i, "name": i} for i in dependencies_of(record)],
    }


async def dependency_list(manager: "SessionManager", record: SessionRecord) -> list[dict[str, str]]:
    """`dependencies { name id }` of a job, with the names of the sessions it depends on."""
    listed = []
    for session_id in dependencies_of(record):
        found = await asyncio.to_thread(manager.db.get_session, session_id)
        listed.append({"id": session_id, "name": found.name if found else session_id})
    return listed


def top_fields(query: str, block: str) -> list[str]:
    """The field names directly inside `block { ... }` of a GraphQL query, skipping the
    braces of sub-selections (`containers { id ... }` gives `containers`)."""
    start = query.find(block)
    brace = query.find("{", start + len(block)) if start >= 0 else -1
    if brace < 0:
        return []
    depth = 0
    word = ""
    names: list[str] = []
    for char in query[brace + 1 :]:
        if char.isalnum() or char == "_":
            word += char
            continue
        if word and depth == 0:
            names.append(word)
        word = ""
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                break
            depth -= 1
    return names
