"""Backend.AI's `/admin/gql`: the GraphQL queries its CLI's `ps` and `session info` send
(`keypair`, `compute_session_list`, `compute_session`, `vfolder_list`); others are refused."""

import re
from typing import Any

from cogbox.service.backendai_status import STATUS, status_info
from cogbox.service.db import KeypairRecord, SessionRecord
from cogbox.service.errors import ServiceError, bad_request
from cogbox.service.gql_session import pick, selection_of, session_values, unsupported_query
from cogbox.service.job_views import dependency_list, gql_job_fields
from cogbox.service.sessions import SessionManager
from cogbox.service.status import ACTIVE
from cogbox.service.vfolder_api import gql_vfolder_list

_WORD = re.compile(r"\w+")


async def graphql(
    manager: SessionManager, keypair: KeypairRecord, query: object, variables: object
) -> dict[str, Any]:
    """The GraphQL queries the CLI's `ps` and `session info` send; others get a GraphQL
    error."""
    if not isinstance(query, str):
        raise bad_request("'query' must be a GraphQL string")
    if variables is not None and not isinstance(variables, dict):
        raise bad_request("'variables' must be a JSON object")
    variables = variables or {}
    root = _root_field(query)
    if root == "keypair":
        return {"data": {"keypair": _pick(_keypair_fields(keypair), _fields_of(query, "keypair"))}}
    if root == "vfolder_list":
        unsupported = [k for k in ("group_id", "filter", "order") if variables.get(k) is not None]
        if unsupported:
            raise bad_request(
                f"'variables.{unsupported[0]}': cogbox lists a keypair's own folders, "
                "unfiltered, oldest first"
            )
        limit = _count_variable(variables, "limit", 20)
        offset = _count_variable(variables, "offset", 0)
        listing = await gql_vfolder_list(
            manager.vfolders, keypair, _fields_of(query, "items"), limit, offset
        )
        return {"data": {"vfolder_list": listing}}
    if root == "compute_session_list":
        wanted = _fields_of(query, "items")
        status = variables.get("status")
        if status is not None and not isinstance(status, str):
            raise bad_request(
                f"'variables.status' must be a string of statuses like 'RUNNING,PREPARING', "
                f"got {status!r}"
            )
        statuses = (status or "").split(",")
        ours = await manager.list_sessions(keypair)
        items = [
            _pick(_gql_session(r), wanted)
            for r in reversed(ours)
            if not statuses[0] or STATUS[r.status] in statuses
        ]
        limit = _count_variable(variables, "limit", 20)
        offset = _count_variable(variables, "offset", 0)
        return {
            "data": {
                "compute_session_list": {
                    "items": items[offset : offset + limit],
                    "total_count": len(items),
                }
            }
        }
    if root == "compute_session":
        return {
            "data": {"compute_session": await _compute_session(manager, keypair, query, variables)}
        }
    raise unsupported_query(
        root, ["keypair", "compute_session_list", "compute_session", "vfolder_list"]
    )


async def _compute_session(
    manager: SessionManager, keypair: KeypairRecord, query: str, variables: dict[str, Any]
) -> dict[str, Any] | None:
    """`session info`: one session by id (the client sends only UUIDs); null if not ours."""
    selection = selection_of(query, "compute_session")
    ref = variables.get("id")
    if not isinstance(ref, str):
        raise bad_request("'variables.id' must be the session's id")
    try:
        record = await manager.find(keypair, ref)
    except ServiceError:
        return None
    values = session_values(record, STATUS[record.status], status_info(record))
    if record.is_batch:  # a job: its type, result, command and what it depends on
        values.update(gql_job_fields(record), dependencies=await dependency_list(manager, record))
    return pick(values, selection, "compute_session")


def _root_field(query: str) -> str:
    """The first field of `{ field ...}`, after an optional `query`/`mutation` keyword and
    variable list. A scan, not a regex: one with several `\\s*` backtracks for minutes on a
    query of spaces."""
    text = query.lstrip()
    for keyword in ("query", "mutation"):
        if text.startswith(keyword):
            text = text[len(keyword) :].lstrip()
            break
    if text.startswith("("):
        end = text.find(")")
        text = text[end + 1 :].lstrip() if end >= 0 else ""
    if not text.startswith("{"):
        return ""
    match = _WORD.match(text[1:].lstrip())
    return match.group(0) if match else ""


def _count_variable(variables: dict[str, Any], name: str, default: int) -> int:
    value = variables.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"'variables.{name}' must be a non-negative integer, got {value!r}")
    return value


def _fields_of(query: str, block: str) -> list[str]:
    match = re.search(rf"\b{block}\s*\{{([^{{}}]*)\}}", query)
    return match.group(1).split() if match else []


def _pick(values: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    return pick(values, [(name, None) for name in wanted], "compute_session_list")


def _keypair_fields(keypair: KeypairRecord) -> dict[str, Any]:
    return {
        "user_id": keypair.access_key,
        "access_key": keypair.access_key,
        "secret_key": "(hidden)",
        "is_active": keypair.is_active,
        "is_admin": keypair.is_admin,
        "concurrency_limit": keypair.max_sessions,
    }


def _gql_session(record: SessionRecord) -> dict[str, Any]:
    """A `compute_session_list` item: `session info`'s fields, with what `ps` reads as JSON
    given as JSON text and no containers (`ps` lists sessions, not their kernels)."""
    return {
        **session_values(record, STATUS[record.status], status_info(record)),
        "occupying_slots": "{}",
        "idle_checks": "{}",
        "containers": [],
        "result": "UNDEFINED" if record.status in ACTIVE else "SUCCESS",
        **gql_job_fields(record),
    }
