"""A session's status: the one set of names the manager, the database and every API share.

A StrEnum, so a status is stored and sent as the same plain string it always was
("running"); each API surface translates it at its edge (Backend.AI's names in backendai.py,
its event names in session_extras.py).
"""

from enum import StrEnum


class SessionStatus(StrEnum):
    PENDING = "pending"  # a job waiting for its dependencies or for room (service.jobs)
    BUILDING = "building"  # its image is built from its recipe first (`image_build` events)
    STARTING = "starting"
    RUNNING = "running"
    DEAD = "dead"  # the kernel died (e.g. out of memory); `restart` revives it
    TERMINATED = "terminated"  # destroyed, reaped or, for a job, its command ended
    LOST = "lost"  # the kernel was lost while the service or agent restarted; files kept
    ERROR = "error"  # it never started
    CANCELLED = "cancelled"  # a job that never started


ACTIVE: tuple[SessionStatus, ...] = (
    SessionStatus.PENDING,
    SessionStatus.BUILDING,
    SessionStatus.STARTING,
    SessionStatus.RUNNING,
    SessionStatus.DEAD,
)
ENDED: tuple[SessionStatus, ...] = tuple(s for s in SessionStatus if s not in ACTIVE)
