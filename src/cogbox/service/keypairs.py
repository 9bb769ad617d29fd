"""API keypairs: an access key (public, names the caller) and a secret key (signs requests).

The format follows Backend.AI's: a 20-character access key starting with "AKIA" and a
40-character secret, so keys drop straight into `BACKEND_ACCESS_KEY`/`BACKEND_SECRET_KEY`.
"""

import secrets
import string
import time

from cogbox.service.db import Database, KeypairRecord
from cogbox.service.names import DEFAULT_MAX_SESSIONS

__all__ = ["create_keypair"]
_UPPER_ALNUM = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


def create_keypair(
    db: Database,
    *,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    max_memory_bytes: int | None = None,
    is_admin: bool = False,
) -> KeypairRecord:
    """A new active keypair, stored in `db`. `max_sessions` caps its concurrent sessions,
    `max_memory_bytes` (None: no cap) the memory limits of those sessions added up."""
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
    if max_memory_bytes is not None and max_memory_bytes < 1:
        raise ValueError(f"max_memory_bytes must be positive, got {max_memory_bytes}")
    record = KeypairRecord(
        access_key="AKIA" + "".join(secrets.choice(_UPPER_ALNUM) for _ in range(16)),
        secret_key="".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40)),
        created_at=time.time(),
        max_sessions=max_sessions,
        is_admin=is_admin,
        is_active=True,
        max_memory_bytes=max_memory_bytes,
    )
    db.add_keypair(record)
    return record
