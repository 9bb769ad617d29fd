"""One declaration per native route: aiohttp serves it and /openapi.json describes it, both
from the same `Operation`, so the two cannot drift apart.

A module that serves native routes keeps an `OperationTable` and declares each handler
with its doc:

    OPERATIONS = OperationTable()

    @OPERATIONS.get(PREFIX + "/pools", Doc("the warm pools", 200, PoolList, ref=False))
    async def list_pools(manager: SessionManager, request: web.Request) -> web.Response: ...

`table.routes(manager)` gives aiohttp its routes; `cogbox.service.openapi` reads
`table.operations`. Handlers take the manager first: the table is declared once, at import,
and the manager it serves is given when the app is built.
"""

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

if TYPE_CHECKING:
    from cogbox.service.sessions import SessionManager

Handler = Callable[["SessionManager", web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Doc:
    """How /openapi.json describes an operation: its summary, its success status and the
    models of its body and answer (or a raw media type), its parameters besides `ref`."""

    summary: str
    ok: int
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    ref: bool = True  # the path has the session's {ref}
    params: tuple[dict[str, Any], ...] = ()
    raw_response: str | None = None  # a media type answered as bytes, not a model
    raw_body: str | None = None  # a media type sent as bytes, not a model
    # Statuses this operation answers beyond the ones every operation has: (status, why).
    refusals: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Operation:
    """A native route: its method (lower case, as OpenAPI writes it), path and handler, and
    its `Doc`; None for a route OpenAPI 3.1 cannot describe (a WebSocket), which the
    document's description names instead."""

    method: str
    path: str
    handler: Handler
    doc: Doc | None


@dataclass
class OperationTable:
    """The native operations of one module, in the order they are declared."""

    operations: list[Operation] = field(default_factory=list)

    def get(self, path: str, doc: Doc | None) -> Callable[[Handler], Handler]:
        return self._declare("get", path, doc)

    def post(self, path: str, doc: Doc) -> Callable[[Handler], Handler]:
        return self._declare("post", path, doc)

    def put(self, path: str, doc: Doc) -> Callable[[Handler], Handler]:
        return self._declare("put", path, doc)

    def delete(self, path: str, doc: Doc) -> Callable[[Handler], Handler]:
        return self._declare("delete", path, doc)

    def routes(self, manager: "SessionManager") -> list[web.RouteDef]:
        """The aiohttp routes of every operation, each handler given `manager`."""
        return [web.route(op.method.upper(), op.path, _bound(op.handler, manager)) for op in self]

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def _declare(self, method: str, path: str, doc: Doc | None) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self.operations.append(Operation(method, path, handler, doc))
            return handler

        return declare


def _bound(
    handler: Handler, manager: "SessionManager"
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(manager, request)

    return handle
