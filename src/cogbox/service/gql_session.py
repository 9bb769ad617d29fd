"""GraphQL's `compute_session(id:)` (Backend.AI's `session info`), and GraphQL refusals.

cogbox serves a few GraphQL queries, not GraphQL: a query or field it does not serve is
refused with a 400 problem body naming it (`unsupported_query`, `unsupported_field`), never
answered with nulls that look like data.
"""

import json
import re
from typing import Any

from cogbox.service.db import SessionRecord
from cogbox.service.errors import ServiceError
from cogbox.service.models import iso

_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|[{}])")
_MAX_DEPTH = 4

Selection = list[tuple[str, "Selection | None"]]


def unsupported_query(name: str, served: list[str]) -> ServiceError:
    return ServiceError(
        400,
        "unsupported-graphql",
        f"the GraphQL query {name or '(none found)'!r} is not supported: cogbox serves "
        + ", ".join(served),
    )


def unsupported_field(query: str, name: str, known: list[str]) -> ServiceError:
    return ServiceError(
        400,
        "unsupported-graphql",
        f"the field {name!r} of GraphQL query {query!r} is not supported; cogbox serves: "
        + " ".join(known),
    )


def selection_of(query: str, field: str) -> Selection:
    """The selection set that follows `field(...)` in `query`: names with their own sets."""
    match = re.search(rf"\b{field}\s*(\([^)]*\))?\s*\{{", query)
    if match is None:
        raise ServiceError(
            400, "unsupported-graphql", f"the GraphQL query {field!r} needs a selection set"
        )
    selection, _ = _parse_set(query, match.end(), 1, field)
    return selection


def _parse_set(query: str, at: int, depth: int, field: str) -> tuple[Selection, int]:
    if depth > _MAX_DEPTH:
        raise ServiceError(400, "unsupported-graphql", f"{field!r}: selections nest too deep")
    selection: Selection = []
    while True:
        token = _TOKEN.match(query, at)
        if token is None:
            rest = query[at : at + 20].strip()
            raise ServiceError(
                400,
                "unsupported-graphql",
                f"{field!r}: cogbox reads plain field names only, not {rest or 'the end'!r}",
            )
        at = token.end()
        text = token.group(1)
        if text == "}":
            return selection, at
        if text == "{":
            if not selection or selection[-1][1] is not None:
                raise ServiceError(400, "unsupported-graphql", f"{field!r}: a stray '{{'")
            inner, at = _parse_set(query, at, depth + 1, field)
            selection[-1] = (selection[-1][0], inner)
        else:
            selection.append((text, None))


def pick(values: dict[str, Any], selection: Selection, query: str) -> dict[str, Any]:
    """`values` reduced to `selection`; 400 naming a field cogbox does not serve."""
    picked: dict[str, Any] = {}
    for name, inner in selection:
        if name not in values:
            raise unsupported_field(query, name, sorted(values))
        value = values[name]
        if inner is not None:
            if not isinstance(value, list):
                raise unsupported_field(query, name + " { ... }", sorted(values))
            value = [pick(item, inner, f"{query}.{name}") for item in value]
        picked[name] = value
    return picked


def session_values(record: SessionRecord, status: str, status_info: str) -> dict[str, Any]:
    """Every field of `compute_session` cogbox serves, for `record` (one container each)."""
    slots = json.dumps({"cpu": None, "mem": record.memory_bytes})
    container = {
        "id": record.id,
        "kernel_id": record.id,
        "cluster_role": "main",
        "cluster_idx": 1,
        "cluster_hostname": "main1",
        "session_id": record.id,
        "image": record.image,
        "registry": "cogbox",
        "status": status,
        "status_info": status_info,
        "status_data": "{}",
        "status_changed": iso(record.status_changed_at),
        "agent": "local",
        "container_id": None,
        "resource_opts": "{}",
        "occupied_slots": slots,
        "preopen_ports": [],
        "live_stat": None,
        "last_stat": None,
    }
    return {
        "id": record.id,
        "session_id": record.id,
        "main_kernel_id": record.id,
        "name": record.name,
        "image": record.image,
        "registry": "cogbox",
        "tag": None,
        "type": "INTERACTIVE",
        "cluster_mode": "single-node",
        "cluster_size": 1,
        "domain_name": "default",
        "group_name": "default",
        "access_key": record.access_key,
        "status": status,
        "status_info": status_info,
        "status_data": "{}",
        "status_changed": iso(record.status_changed_at),
        "created_at": iso(record.created_at),
        "terminated_at": iso(record.terminated_at),
        "scaling_group": "default",
        "occupying_slots": slots,
        "idle_checks": None,
        "containers": [container],
        "dependencies": [],
        "abusing_reports": [],
    }
