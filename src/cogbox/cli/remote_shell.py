"""`cogbox shell --endpoint URL`: the shell's cells run in a session on a cogbox service.

The session is created when the shell starts and removed when it ends (Ctrl-D). Each cell
is one run over the session's WebSocket; Ctrl-C during a cell asks the service to interrupt
it (`POST /v1/sessions/{id}/interrupt`); the next cell waits until that run has ended: the
session and its variables live on. A cell the service refuses prints the refusal; the shell goes on.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator

import click

from cogbox.cli.endpoint_options import resolve_endpoint
from cogbox.cli.line_editing import KernelComplete
from cogbox.cli.run import answer_input, show_event
from cogbox.service.endpoint import Endpoint, ServiceClientError, call

SETTLE_SECONDS = 30.0


class RemoteCells:
    """Cells of one service session."""

    def __init__(self, endpoint: Endpoint, session_id: str) -> None:
        self._endpoint = endpoint
        self.session_id = session_id
        self._settling_until = 0.0  # after an interrupt: until then a 409 means "retry"

    @property
    def complete(self) -> KernelComplete | None:
        return None  # the native API serves no completion: names typed so far are offered

    def run(self, cell: str) -> None:
        from cogbox.service.client import ServiceClient

        async def stream() -> None:
            async with ServiceClient(self._endpoint) as client:
                async for event in client.execute(self.session_id, cell, on_input=answer_input):
                    show_event(event, 0)

        while True:
            try:
                asyncio.run(stream())
            except KeyboardInterrupt:
                call(self._endpoint, "POST", f"/v1/sessions/{self.session_id}/interrupt")
                click.echo("\ninterrupted", err=True)
                self._settling_until = time.monotonic() + SETTLE_SECONDS
            except ServiceClientError as exc:
                # Just after an interrupt the kernel may still be ending that run: the service
                # refuses (409) until it has; a cell refused then is retried, not lost.
                if exc.status == 409 and time.monotonic() < self._settling_until:
                    time.sleep(0.1)
                    continue
                click.secho(f"error: {exc}", fg="red", err=True)  # the shell goes on
            break
        sys.stdout.flush()


@contextlib.contextmanager
def remote_cells(ctx: click.Context, image: str) -> Iterator[RemoteCells]:
    from cogbox.service.client import ServiceClient

    endpoint = resolve_endpoint(ctx)

    async def create() -> str:
        async with ServiceClient(endpoint) as client:
            return str((await client.create_session(image))["id"])

    click.echo(f"starting a {image} session at {endpoint.url}...", err=True)
    session_id = asyncio.run(create())
    try:
        yield RemoteCells(endpoint, session_id)
    finally:
        with contextlib.suppress(Exception):
            call(endpoint, "DELETE", f"/v1/sessions/{session_id}")
