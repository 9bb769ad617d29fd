"""`cogbox logs [-f] NAME`: a session's full log (stdout and stderr) from a cogbox service.

The log is copied to stdout byte for byte as it streams (never held whole). With -f it
follows the session until it has ended; a dropped connection is resumed from the byte
where it stopped.
"""

import http.client
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, urlsplit

import click

from cogbox.cli.endpoint_options import endpoint_options, resolve_endpoint

if TYPE_CHECKING:
    from cogbox.service.endpoint import Endpoint

_CHUNK = 1 << 16
_RETRIES = 5
_RETRY_WAIT_S = 1.0


@click.command()
@endpoint_options
@click.argument("ref")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the session has ended.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Start at this byte.")
@click.pass_context
def logs(ctx: click.Context, ref: str, follow: bool, offset: int) -> None:
    """Print the full log of session REF (its name or id), also after it ended."""
    from cogbox.service.endpoint import ServiceClientError

    resolved = resolve_endpoint(ctx)  # also the `session` group's options, if given there
    cursor = Cursor(offset)
    failures = 0
    while True:
        try:
            copy_log(resolved, ref, cursor, follow, sys.stdout.buffer)
            return
        except ServiceClientError as exc:
            if exc.status or not follow or failures >= _RETRIES:
                raise click.ClickException(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            if not follow or failures >= _RETRIES:
                raise click.ClickException(f"the log stream broke: {exc}") from exc
        failures += 1
        time.sleep(_RETRY_WAIT_S)


@dataclass
class Cursor:
    """How far into the log the bytes written to stdout reach."""

    offset: int


def copy_log(endpoint: "Endpoint", ref: str, cursor: Cursor, follow: bool, out: BinaryIO) -> None:
    """Copy the log of `ref` from `cursor.offset` on to `out`, moving the cursor with each
    chunk written. Raises OSError or HTTPException if the stream breaks (the cursor then
    says where to resume), ServiceClientError if the service refuses."""
    from cogbox.service.endpoint import OCTETS, ServiceClientError, problem_of, refused

    offset = cursor.offset
    path = f"/v1/sessions/{quote(ref, safe='')}/logs?offset={offset}" + (
        "&follow=1" if follow else ""
    )
    parts = urlsplit(endpoint.url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=None if follow else 300)
    try:
        try:
            connection.request(
                "GET",
                parts.path.rstrip("/") + path,
                headers=endpoint.signed_headers("GET", path, OCTETS),
            )
            response = connection.getresponse()
        except OSError as exc:
            raise ServiceClientError(
                f"cannot reach the cogbox service at {endpoint.url}: {exc}"
            ) from exc
        if response.status >= 400:
            raise refused(response.status, problem_of(response.read(1 << 16)))
        while chunk := response.read1(_CHUNK):
            out.write(chunk)
            out.flush()
            cursor.offset += len(chunk)
    finally:
        connection.close()
