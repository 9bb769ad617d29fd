"""Request signing exactly as Backend.AI's clients do it, and its verification.

    Authorization: BackendAI signMethod=HMAC-SHA256, credential=<access key>:<signature>
    Date (or X-BackendAI-Date): the request's time, ISO 8601 or RFC 1123
    X-BackendAI-Version: v7.20230615

    key       = HMAC(HMAC(secret, date as YYYYMMDD), host)
    signature = HMAC(key, "\\n".join([METHOD, path?query, raw date, "host:" + host,
                  "content-type:" + type without parameters, "x-backendai-version:" + version,
                  sha256(b"").hexdigest()]))

The body is not signed (Backend.AI's clients hash an empty body since API v4.20181215); TLS
or a loopback listener protects it. A request is refused if its date is more than the
allowed skew from the server's clock, or if its signature was already seen within that
window (a replay). Seen signatures are kept until their date can no longer pass the skew
check, in memory and in a file a restart reads back (`cogbox.service.replay`), so a replay
is refused across restarts of the service too.

The keypair is read from the database's memo (`cogbox.service.memo`): a removed or
deactivated keypair is refused by the next request, from whichever process it was removed.

Jupyter's clients cannot sign requests; they send `Authorization: token <T>` (or
`?token=<T>`). Each keypair has one such token, derived from its secret key so the secret
itself never travels:

    token = access key + "." + hex(HMAC-SHA256(secret, "cogbox-jupyter-token-v1"))[:40]

It is a bearer credential for the keypair's sessions (the Jupyter surface only): treat it
like the secret key, and deactivate the keypair to revoke it.
"""

import asyncio
import email.utils
import hmac
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cogbox.service.db import KeypairRecord
from cogbox.service.errors import ServiceError, unauthorized

# Signing lives apart so that clients (the CLI) import no server code; re-exported here.
from cogbox.service.signing import jupyter_token, signature, signed_headers

if TYPE_CHECKING:
    from aiohttp import web

    from cogbox.service.db import Database
    from cogbox.service.replay import ReplayWindow

__all__ = ["RequestVerifier", "jupyter_token", "parse_date", "signature", "signed_headers"]

_AUTHORIZATION = re.compile(
    r"^BackendAI\s+signMethod=HMAC-(?P<hash>[A-Za-z0-9]+),\s*"
    r"credential=(?P<access>[^:\s]+):(?P<signature>[0-9a-fA-F]+)$"
)
_VERSION = re.compile(r"^v\d+\.\d{8}$")


def parse_date(raw: str) -> datetime:
    """A request date in ISO 8601 (what Backend.AI's clients send) or RFC 1123 form."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError) as exc:
            raise unauthorized(f"cannot read the request date {raw!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class RequestVerifier:
    """Checks signed requests against the stored keypairs and remembers recent signatures."""

    def __init__(self, db: "Database", max_skew: float, replay: "ReplayWindow") -> None:
        self._db = db
        self._max_skew = max_skew
        self._replay = replay

    async def verify(
        self,
        *,
        method: str,
        path_with_query: str,
        host: str,
        content_type: str,
        authorization: str | None,
        raw_date: str | None,
        version: str | None,
    ) -> "KeypairRecord":
        """The keypair that signed the request; raises a 401 ServiceError otherwise."""
        if not authorization:
            raise unauthorized(
                "missing Authorization header: sign the request with your keypair "
                "(BackendAI signMethod=HMAC-SHA256, credential=ACCESS_KEY:SIGNATURE)"
            )
        match = _AUTHORIZATION.fullmatch(authorization.strip())
        if match is None:
            raise unauthorized(
                "malformed Authorization header: expected "
                "'BackendAI signMethod=HMAC-SHA256, credential=ACCESS_KEY:SIGNATURE'"
            )
        if match["hash"].upper() != "SHA256":
            raise unauthorized(f"unsupported signMethod HMAC-{match['hash']}: use HMAC-SHA256")
        if not raw_date:
            raise unauthorized("missing Date (or X-BackendAI-Date) header")
        if not version or not _VERSION.fullmatch(version):
            raise unauthorized("missing or malformed X-BackendAI-Version header (e.g. v7.20230615)")
        date = parse_date(raw_date)
        skew = abs(time.time() - date.timestamp())
        if skew > self._max_skew:
            raise unauthorized(
                f"request date {raw_date!r} is {skew:.0f} s away from the server's clock "
                f"(at most {self._max_skew:.0f} s allowed): check your clock"
            )
        keypair = await self._keypair(match["access"])
        if keypair is None or not keypair.is_active:
            raise unauthorized(f"unknown or inactive access key {match['access']!r}")
        expected = signature(
            secret_key=keypair.secret_key,
            method=method,
            path_with_query=path_with_query,
            raw_date=raw_date,
            date=date,
            host=host,
            content_type=content_type,
            version=version,
        )
        given = match["signature"].lower()
        if not hmac.compare_digest(expected, given):
            raise unauthorized(
                "signature mismatch: check the secret key, the endpoint's host:port and the "
                "client's clock"
            )
        # A signature stays refusable for as long as its date stays acceptable.
        until = date.timestamp() + self._max_skew + 1
        if not self._replay.accept(given, until):
            raise ServiceError(
                401, "replayed-request", "this signed request was already used: sign each anew"
            )
        return keypair

    async def verify_token(self, token: str | None) -> "KeypairRecord":
        """The keypair whose Jupyter token `token` is; raises a 401 ServiceError otherwise."""
        if not token:
            raise unauthorized(
                "missing Jupyter token: send 'Authorization: token <TOKEN>' (print yours with "
                "`cogbox session token`)"
            )
        access_key, _, mac = token.partition(".")
        keypair = await self._keypair(access_key) if access_key and mac else None
        if keypair is None or not keypair.is_active:
            raise unauthorized("unknown or revoked Jupyter token")
        expected = jupyter_token(keypair.access_key, keypair.secret_key)
        if not hmac.compare_digest(expected.encode(), token.encode()):
            raise unauthorized("unknown or revoked Jupyter token")
        return keypair

    async def _keypair(self, access_key: str) -> "KeypairRecord | None":
        # Checked against the database's generation on every request (no thread when the
        # memo can tell inline): a removed keypair is refused at once.
        cached = self._db.cached_keypair(access_key)
        if cached is not None:
            return cached
        return await asyncio.to_thread(self._db.get_keypair, access_key)


def keypair_of(request: "web.Request") -> KeypairRecord:
    """The keypair the auth middleware (app.py) proved this request's signer holds."""
    keypair = request.get("keypair")
    assert isinstance(keypair, KeypairRecord), "the auth middleware sets the keypair"
    return keypair
