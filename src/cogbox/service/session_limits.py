"""Whether a keypair may start one more session: its session count and memory limits."""

from cogbox.service.db import KeypairRecord
from cogbox.service.errors import ServiceError
from cogbox.sizes import format_size


def check_limits(keypair: KeypairRecord, held: list[int], memory: int) -> None:
    """Refuse (429) a session needing `memory` bytes that would take `keypair` past its
    session count or memory limit; `held` is the memory of each session it holds (active,
    or still starting)."""
    access = keypair.access_key
    if len(held) >= keypair.max_sessions:
        raise ServiceError(
            429,
            "too-many-sessions",
            f"keypair {access} already has {keypair.max_sessions} active sessions (its "
            "limit): destroy one before creating another",
        )
    cap = keypair.max_memory_bytes
    if cap is not None and sum(held) + memory > cap:
        raise ServiceError(
            429,
            "memory-limit",
            f"keypair {access} may hold {format_size(cap)} of memory in all its sessions; "
            f"its {_count(len(held), 'active session')} hold{'s' if len(held) == 1 else ''} "
            f"{format_size(sum(held))} and this one "
            f"needs {format_size(memory)}: destroy a session or ask for less memory",
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
