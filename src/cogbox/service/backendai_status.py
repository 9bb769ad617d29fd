"""cogbox's session statuses in Backend.AI's names, and the session's info as its client reads it.

Backend.AI has no `lost` or `dead`: they show as ERROR, with cogbox's own state and its reason
in status_info (e.g. "lost (service-restarted)").
"""

from typing import Any

from cogbox.service.db import SessionRecord
from cogbox.service.models import iso
from cogbox.service.status import SessionStatus

STATUS: dict[SessionStatus, str] = {  # cogbox's statuses in Backend.AI's names
    SessionStatus.PENDING: "PENDING",
    SessionStatus.BUILDING: "PREPARING",
    SessionStatus.STARTING: "PREPARING",
    SessionStatus.RUNNING: "RUNNING",
    SessionStatus.DEAD: "ERROR",
    SessionStatus.TERMINATED: "TERMINATED",
    SessionStatus.LOST: "ERROR",
    SessionStatus.ERROR: "ERROR",
    SessionStatus.CANCELLED: "CANCELLED",
}


def session_info(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "session_id": record.id,
        "name": record.name,
        "image": record.image,
        "status": STATUS[record.status],
        "status_info": status_info(record),
        "created_at": iso(record.created_at),
        "terminated_at": iso(record.terminated_at),
        "status_changed": iso(record.status_changed_at),
    }


def status_info(record: SessionRecord) -> str:
    """cogbox's own state (e.g. "lost") with its reason: Backend.AI has no such statuses."""
    return f"{record.status} ({record.status_info})" if record.status_info else record.status
