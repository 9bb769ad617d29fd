"""Signing requests as Backend.AI's clients do, and the keypair's Jupyter token: the client
half of `cogbox.service.auth` (whose docstring describes the scheme), kept free of server code
so that `cogbox session ...` imports only what a request needs. The service verifies with
these same functions.
"""

import hashlib
import hmac
from datetime import UTC, datetime

_TOKEN_CONTEXT = b"cogbox-jupyter-token-v1"
_TOKEN_HEX_CHARS = 40


def jupyter_token(access_key: str, secret_key: str) -> str:
    """The Jupyter token of a keypair (see the module's doc): what Jupyter clients send."""
    mac = hmac.new(secret_key.encode(), _TOKEN_CONTEXT, "sha256").hexdigest()
    return f"{access_key}.{mac[:_TOKEN_HEX_CHARS]}"


def signature(
    *,
    secret_key: str,
    method: str,
    path_with_query: str,
    raw_date: str,
    date: datetime,
    host: str,
    content_type: str,
    version: str,
) -> str:
    """The hex HMAC-SHA256 signature of a request (the algorithm of Backend.AI's clients)."""
    body_hash = hashlib.sha256(b"").hexdigest()
    to_sign = "\n".join(
        [
            method.upper(),
            path_with_query,
            raw_date,
            f"host:{host}",
            f"content-type:{content_type.lower()}",
            f"x-backendai-version:{version}",
            body_hash,
        ]
    ).encode()
    key = hmac.new(secret_key.encode(), date.strftime("%Y%m%d").encode(), "sha256").digest()
    key = hmac.new(key, host.encode(), "sha256").digest()
    return hmac.new(key, to_sign, "sha256").hexdigest()


def signed_headers(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path_with_query: str,
    host: str,
    content_type: str = "application/json",
    version: str = "v7.20230615",
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers that sign a request, for cogbox's own clients (tests, benchmarks)."""
    date = now or datetime.now(UTC)
    raw_date = date.isoformat()
    sig = signature(
        secret_key=secret_key,
        method=method,
        path_with_query=path_with_query,
        raw_date=raw_date,
        date=date,
        host=host,
        content_type=content_type,
        version=version,
    )
    return {
        "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{sig}",
        "Date": raw_date,
        "X-BackendAI-Version": version,
        "Content-Type": content_type,
    }
