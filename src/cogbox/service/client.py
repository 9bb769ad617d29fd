"""A small client of a cogbox service's native API (/v1), for the CLI and scripts.

    endpoint = Endpoint.resolve()      # COGBOX_ENDPOINT / COGBOX_ACCESS_KEY / ... or BACKEND_*
    async with ServiceClient(endpoint) as client:
        session = await client.create_session("python")
        async for event in client.execute(session["id"], "print(6 * 7)"):
            ...                        # cogbox.kernel.events: Stdout("42\\n"), Finished(...)

Requests are signed by `cogbox.service.signing.signed_headers`, the same code the service
verifies with. `run_remote` is `cogbox run` against a service: a fresh session, one run
streamed live, the session destroyed at the end (also on Ctrl-C).
"""

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp

from cogbox.kernel.events import (
    Event,
    Finished,
    InputRequest,
    KernelDied,
    event_from_dict,
)

# Endpoint, its errors and one-off calls live apart, without aiohttp: see that module.
from cogbox.service.endpoint import (
    JSON,
    OCTETS,
    Endpoint,
    ServiceClientError,
    problem_of,
    refused,
)
from cogbox.service.status import SessionStatus

__all__ = [
    "Endpoint",
    "InputHandler",
    "ProgressHandler",
    "ServiceClient",
    "ServiceClientError",
    "run_remote",
]

_POLL_S = 0.5  # how often a create call that waits looks at the image build's progress
InputHandler = Callable[[InputRequest], str]
ProgressHandler = Callable[[str], None]


class ServiceClient:
    """Signed calls to one service's native API; use as `async with`."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 300.0) -> None:
        self.endpoint = endpoint
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "ServiceClient":
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self,
        image: str,
        *,
        name: str | None = None,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        env: dict[str, str] | None = None,
        memory: str | int | None = None,
        cpus: float | None = None,
        bootstrap_script: str | None = None,
        on_progress: ProgressHandler | None = None,
        extra: dict[str, Any] | None = None,
        mounts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Start a session of `image` and return it once it runs (`memory`: its memory
        limit, bytes or a size like "1g"; default: the image policy's). If the service builds the
        image first, that can take minutes: `on_progress` is told each build step
        ("building image cntk: install Python packages") while the call waits."""
        if on_progress is not None and name is None:
            name = f"cogbox-{secrets.token_hex(5)}"  # so the build can be watched by name
        body: dict[str, Any] = {"image": image, "env": env or {}}
        if mounts:
            body["mounts"] = mounts  # storage folders, NAME or NAME=PATH
        for key, value in (
            ("name", name),
            ("idle_timeout", idle_timeout),
            ("max_lifetime", max_lifetime),
            ("memory", memory),
            ("cpus", cpus),
            ("bootstrap_script", bootstrap_script),
        ):
            if value is not None:
                body[key] = value
        body.update(extra or {})  # further fields of the create body (a job's, ...)
        # No overall time limit: building an image on demand may take many minutes.
        create = asyncio.ensure_future(
            self._call("POST", "/v1/sessions", body, timeout=aiohttp.ClientTimeout())
        )
        if on_progress is not None:
            assert name is not None
            await self._watch_build(create, name, image, on_progress)
        return dict(await create)

    async def _watch_build(
        self, create: "asyncio.Future[Any]", name: str, image: str, on_progress: ProgressHandler
    ) -> None:
        """Report the build steps of session `name` until `create` is answered."""
        shown = ""
        while not create.done():
            await asyncio.wait({create}, timeout=_POLL_S)
            if create.done():
                return
            try:
                session = await self.get_session(name)
            except ServiceClientError:
                continue  # not recorded yet, or a passing failure: the create call decides
            step = str(session.get("progress") or "")
            if session.get("status") == SessionStatus.BUILDING and step and step != shown:
                shown = step
                on_progress(f"building image {image}: {step} ...")

    async def get_session(self, ref: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/sessions/{ref}"))

    async def destroy_session(self, ref: str) -> None:
        await self._call("DELETE", f"/v1/sessions/{ref}")

    async def upload(self, ref: str, path: str, data: bytes) -> None:
        """Write `data` to `path` (relative to /home/work, folders made as needed)."""
        query = urlencode({"path": path}, safe="/")
        await self._call("PUT", f"/v1/sessions/{ref}/files/content?{query}", data=data)

    async def execute(
        self,
        ref: str,
        code: str,
        *,
        timeout: float | None = None,
        on_input: Callable[[InputRequest], Any] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """One run over the session's WebSocket, its events as they come, ending with the
        terminal event. `on_input` answers input() (called in a thread, so the socket stays
        served while it waits); without it the code gets an empty line."""
        frame = {"code": code, **({"timeout": timeout} if timeout else {})}
        async for event in self._stream(ref, frame, on_input):
            yield event

    async def execute_batch(
        self, ref: str, exec: str, *, build: str | None = None, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """A batch run (shell commands in /home/work, as `Session.execute_batch`) over the
        session's WebSocket, its output live, ending with `Finished` and its `exit_code`."""
        frame = {"exec": exec, "build": build, **({"timeout": timeout} if timeout else {})}
        async for event in self._stream(ref, frame, None):
            yield event

    async def _stream(
        self,
        ref: str,
        frame: dict[str, Any],
        on_input: Callable[[InputRequest], Any] | None,
    ) -> AsyncGenerator[Event, None]:
        path = f"/v1/sessions/{ref}/stream"
        try:
            ws = await self._session().ws_connect(
                self._url(path), headers=self._headers("GET", path, OCTETS), heartbeat=30.0
            )
        except aiohttp.WSServerHandshakeError as exc:
            await self.get_session(ref)  # raises the service's own explanation (no such session)
            raise ServiceClientError(
                f"the service refused the stream of session {ref!r} (HTTP {exc.status})",
                exc.status,
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ServiceClientError(
                f"cannot reach the cogbox service at {self.endpoint.url}: {exc}"
            ) from exc
        async with ws:
            await ws.send_json(frame)
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if data.get("kind") == "problem":
                    raise refused(int(data.get("status", 0)), data)
                try:
                    event = event_from_dict(data)
                except ValueError as exc:
                    raise ServiceClientError(f"the service sent {exc}") from exc
                yield event
                if isinstance(event, InputRequest):
                    answer = await asyncio.to_thread(on_input, event) if on_input else ""
                    await ws.send_json({"input": str(answer)})
                if isinstance(event, Finished | KernelDied):
                    return
        raise ServiceClientError("the service closed the stream before the run finished")

    # ------------------------------------------------------------------ plumbing

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("use ServiceClient as `async with ServiceClient(...) as client`")
        return self._http

    def _url(self, path: str) -> str:
        return self.endpoint.url + path

    def _headers(self, method: str, path: str, content_type: str) -> dict[str, str]:
        return self.endpoint.signed_headers(method, path, content_type)

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        data: bytes | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        content_type = JSON if body is not None else OCTETS
        if body is not None:
            data = json.dumps(body).encode()
        try:
            async with self._session().request(
                method,
                self._url(path),
                data=data,
                headers=self._headers(method, path, content_type),
                timeout=timeout or self._timeout,
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise refused(response.status, problem_of(payload))
        except aiohttp.ClientConnectionError as exc:
            raise ServiceClientError(
                f"cannot reach the cogbox service at {self.endpoint.url}: {exc}"
            ) from exc
        return json.loads(payload) if payload else None


def run_remote(
    endpoint: Endpoint,
    image: str,
    code: str,
    *,
    timeout: float | None = None,
    on_input: InputHandler | None = None,
    on_progress: ProgressHandler | None = None,
    uploads: Sequence[tuple[str, bytes]] = (),
    batch: bool = False,
) -> Iterator[Event]:
    """`cogbox run` on a service: start a session of `image`, run `code` in it, yield its
    events live, then destroy the session (also when the caller stops early or on Ctrl-C).

    `uploads` (path in /home/work, content) are written first. With `batch`, `code` is a
    shell command run as a process (`cogbox run SCRIPT`), ending with its exit status.

    `on_progress` is told what is happening before the first event ("starting a session of
    cntk", then each step if the service builds the image first: "building image cntk:
    install Python packages ..."), and "" once the session runs: a CLI shows a spinner in
    between.
    """
    loop = asyncio.new_event_loop()
    client = ServiceClient(endpoint)
    session_id: str | None = None
    events: AsyncGenerator[Event, None] | None = None
    try:
        loop.run_until_complete(client.__aenter__())
        if on_progress is not None:
            on_progress(f"starting a session of {image} at {endpoint.url}")
        try:
            created = loop.run_until_complete(client.create_session(image, on_progress=on_progress))
        finally:
            if on_progress is not None:
                on_progress("")
        session_id = str(created["id"])
        for dest, data in uploads:
            loop.run_until_complete(client.upload(session_id, dest, data))
        if batch:
            events = client.execute_batch(session_id, code, timeout=timeout)
        else:
            events = client.execute(session_id, code, timeout=timeout, on_input=on_input)
        while True:
            try:
                event = loop.run_until_complete(anext(events))
            except StopAsyncIteration:
                break
            yield event
    finally:
        try:
            if events is not None:
                # Still running if Ctrl-C cut it short: then it cannot be closed; the
                # destroy below ends the run on the service anyway.
                with contextlib.suppress(Exception):
                    loop.run_until_complete(events.aclose())
            if session_id is not None:
                loop.run_until_complete(client.destroy_session(session_id))
        finally:
            loop.run_until_complete(client.__aexit__())
            loop.close()
