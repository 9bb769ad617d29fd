"""Where a cogbox service is, the keypair that signs requests to it, and one signed call.

    endpoint = Endpoint.resolve()      # COGBOX_ENDPOINT / COGBOX_ACCESS_KEY / ... or BACKEND_*
    sessions = call(endpoint, "GET", "/v1/sessions")["sessions"]

`call` makes one request-response call with the standard library's `http.client`: what a
short-lived command (`cogbox session ls`, `rm`) needs, without aiohttp, whose import alone
takes about 160 ms of the CLI's 300 ms start budget (benchmarks/cli_start.py). Runs
(the session's WebSocket), builds watched while they wait, and anything long-lived use
`cogbox.service.client.ServiceClient`; both sign and read refusals with the code below.
"""

import http.client
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cogbox.errors import CogboxError
from cogbox.service.names import ACCESS_KEY_ENVS, ENDPOINT_ENVS, SECRET_KEY_ENVS
from cogbox.service.signing import jupyter_token, signed_headers

JSON = "application/json"
OCTETS = "application/octet-stream"  # what an empty body (and a WebSocket upgrade) signs as
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ServiceClientError(CogboxError):
    """The service refused a request, or could not be reached; the message says which."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where a cogbox service is and the keypair to sign requests with."""

    url: str
    access_key: str
    secret_key: str

    @classmethod
    def resolve(
        cls, url: str | None = None, access_key: str | None = None, secret_key: str | None = None
    ) -> "Endpoint":
        """The given values, else COGBOX_ENDPOINT/_ACCESS_KEY/_SECRET_KEY, else Backend.AI's
        BACKEND_ENDPOINT/_ACCESS_KEY/_SECRET_KEY. Raises ServiceClientError naming what is
        missing."""
        url = url or _env(ENDPOINT_ENVS)
        access_key = access_key or _env(ACCESS_KEY_ENVS)
        secret_key = secret_key or _env(SECRET_KEY_ENVS)
        missing = [
            name
            for name, value in (
                ("--endpoint / COGBOX_ENDPOINT", url),
                ("--access-key / COGBOX_ACCESS_KEY", access_key),
                ("--secret-key / COGBOX_SECRET_KEY", secret_key),
            )
            if not value
        ]
        if missing:
            raise ServiceClientError(
                f"missing {', '.join(missing)} (Backend.AI's BACKEND_* variables work too; "
                "make a keypair with `cogbox keypair create`)"
            )
        assert url and access_key and secret_key
        if not url.startswith(("http://", "https://")):
            raise ServiceClientError(f"the endpoint {url!r} must start with http:// or https://")
        return cls(url.rstrip("/"), access_key, secret_key)

    @property
    def jupyter_token(self) -> str:
        """The keypair's token for the service's Jupyter API (/api/kernels)."""
        return jupyter_token(self.access_key, self.secret_key)

    @property
    def host(self) -> str:
        """The Host a request carries and is signed for: the URL's host, and its port unless
        it is the scheme's default."""
        parts = urlsplit(self.url)
        port = parts.port
        default = port is None or port == _DEFAULT_PORTS.get(parts.scheme)
        return f"{parts.hostname or ''}{'' if default else f':{port}'}"

    def signed_headers(self, method: str, path: str, content_type: str) -> dict[str, str]:
        """Headers that sign a request for `path` (below the endpoint's URL), Host included."""
        headers = signed_headers(
            access_key=self.access_key,
            secret_key=self.secret_key,
            method=method,
            path_with_query=urlsplit(self.url).path.rstrip("/") + path,
            host=self.host,
            content_type=content_type,
        )
        headers["Host"] = self.host
        return headers


def call(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = 300.0,
) -> Any:
    """One signed call to the native API: the answer's JSON (None if empty). Raises
    ServiceClientError with the service's own message if it refuses, or if it cannot be
    reached. `timeout` bounds each wait on the socket, in seconds."""
    content_type = JSON if body is not None else OCTETS
    data = json.dumps(body).encode() if body is not None else None
    parts = urlsplit(endpoint.url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(
            method,
            parts.path.rstrip("/") + path,
            body=data,
            headers=endpoint.signed_headers(method, path, content_type),
        )
        response = connection.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServiceClientError(
            f"cannot reach the cogbox service at {endpoint.url}: {exc}"
        ) from exc
    finally:
        connection.close()
    if response.status >= 400:
        raise refused(response.status, problem_of(payload))
    return json.loads(payload) if payload else None


def problem_of(payload: bytes) -> dict[str, Any]:
    """The problem body of a refusal; a body that is not JSON becomes its text (cut short)."""
    try:
        problem = json.loads(payload)
    except ValueError:
        return {"msg": payload.decode(errors="replace")[:500]}
    return problem if isinstance(problem, dict) else {"msg": str(problem)[:500]}


def refused(status: int, problem: dict[str, Any]) -> ServiceClientError:
    """The error for a refusal with HTTP `status` and the service's problem body."""
    code = str(problem.get("error") or "")
    message = str(problem.get("msg") or problem.get("title") or "request refused")
    return ServiceClientError(f"the service refused: {message} (HTTP {status})", status, code)


def _env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)
