"""The aiohttp application: middlewares (errors, auth), the API surfaces, start and stop."""

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from cogbox import event_loop
from cogbox.agent.local import LocalAgent
from cogbox.service import backendai, jupyter, log_routes, native, vfolder_api
from cogbox.service.agent import Agent
from cogbox.service.auth import RequestVerifier
from cogbox.service.bodies import JSON_LIMIT_BYTES
from cogbox.service.config import ServiceConfig
from cogbox.service.db import Database
from cogbox.service.errors import ServiceError, problem_or_internal
from cogbox.service.openapi import openapi_document
from cogbox.service.replay import ReplayWindow
from cogbox.service.sessions import SessionManager
from cogbox.service.streams import STREAMS_KEY, OpenStreams
from cogbox.service.vfolder_transfer import Transfers, is_transfer_path

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MANAGER_KEY = web.AppKey("manager", SessionManager)
_UNSIGNED = {("GET", "/"), ("GET", "/openapi.json"), ("HEAD", "/")}


def create_app(
    config: ServiceConfig, *, db: Database | None = None, agent: Agent | None = None
) -> web.Application:
    """The service as an aiohttp app; it opens the database and agent when it starts."""
    database = db or Database(config.database_url)
    agent = agent or node_agent(config)
    manager = SessionManager(database, agent, config)
    if hasattr(agent, "on_reconnect"):  # a supervised agent process: re-attach when it is back
        agent.on_reconnect = manager.reattach
    if hasattr(agent, "on_status"):  # Slurm's agent tells a queued session's status
        agent.on_status = manager.set_status
    replay = ReplayWindow(config.sessions_dir.parent)
    verifier = RequestVerifier(database, config.max_clock_skew, replay)
    gateway = jupyter.JupyterGateway(manager)
    transfers = Transfers(database, manager.vfolders)

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = ServiceError(exc.status, "http-error", exc.reason)
            if exc.status in (404, 405) and request.match_info.http_exception is not None:
                error = unsupported_route(request.method, request.path, exc.status)
            return web.json_response(error.body(), status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a ServiceError, a typed error of another part, or a bug
            known = problem_or_internal(exc, f"{request.method} {redact(request.path)}")
            return web.json_response(known.body(), status=known.status)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if jupyter.is_jupyter_path(request.path):
            request["keypair"] = await verifier.verify_token(jupyter.token_of(request))
        elif is_transfer_path(request.path):
            pass  # storage-folder transfers carry their own token (vfolder_transfer)
        elif (request.method, request.path) not in _UNSIGNED:
            request["keypair"] = await verifier.verify(
                method=request.method,
                path_with_query=request.raw_path,
                host=request.host,
                content_type=request.content_type,
                authorization=request.headers.get("Authorization"),
                raw_date=request.headers.get("X-BackendAI-Date") or request.headers.get("Date"),
                version=request.headers.get("X-BackendAI-Version"),
            )
        return await handler(request)

    # The JSON limit for every body aiohttp itself would read; uploads stream past it.
    app = web.Application(middlewares=[problems, authenticate], client_max_size=JSON_LIMIT_BYTES)
    app[MANAGER_KEY] = manager
    app[STREAMS_KEY] = streams = OpenStreams(database)
    document = openapi_document()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)
    app.router.add_routes(native.routes(manager))
    app.router.add_routes(log_routes.routes(manager))
    app.router.add_routes(backendai.routes(manager, config.query_wait))
    app.router.add_routes(vfolder_api.routes(manager.vfolders, transfers))
    app.router.add_routes(jupyter.routes(gateway))

    async def lifecycle(app: web.Application) -> object:
        await manager.open()
        yield
        transfers.close()
        try:
            await manager.close()
        finally:  # a failed close still leaves no folder mounted and the database closed
            await asyncio.to_thread(manager.vfolders.unmount_all)
            replay.close()
            database.close()

    async def disconnect(app: web.Application) -> None:
        await gateway.disconnect_all()

    app.on_shutdown.append(disconnect)
    app.cleanup_ctx.append(lifecycle)  # type: ignore[arg-type]
    app.cleanup_ctx.append(streams.running)
    return app


def node_agent(config: ServiceConfig) -> Agent:
    """The agent of this node: the `cogbox agent` process (found live, or started now and
    left running if this process is killed), or, embedded, a LocalAgent in this process."""
    if config.agent == "embedded":
        return LocalAgent(
            pools=config.pools,
            workdirs=config.sessions_dir,
            logs_dir=config.logs_dir,
            folders=config.vfolders_dir,
        )
    if config.agent == "slurm":
        from cogbox.cluster.slurm_agent import slurm_agent

        return slurm_agent(config)
    from cogbox.agent.channel import AgentPlace
    from cogbox.agent.process import ensure_agent
    from cogbox.agent.remote import RemoteAgent

    place = AgentPlace(config.agent_dir)

    def restart() -> bool:
        return ensure_agent(
            place,
            sessions_dir=config.sessions_dir,
            logs_dir=config.logs_dir,
            vfolders_dir=config.vfolders_dir,
            pools=config.pools,
        )

    log.info("%s the node's agent (%s)", "started" if restart() else "found", place.socket)
    return RemoteAgent(place.socket, place.key(), restart=restart)


def serve(config: ServiceConfig) -> None:
    """Run the service until SIGINT/SIGTERM; kernels are stopped on the way out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        print=None,
        access_log_class=AccessLogger,
        loop=event_loop.new_loop(),
    )


_SECRETS = re.compile(r"(^/t/|[?&]token=)[^/?&]+")


class AccessLogger(AbstractAccessLogger):
    """One line per request, with Jupyter tokens (in paths or queries) blanked out."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            time,
        )


def redact(path: str) -> str:
    """`path` with Jupyter tokens (in a /t/<token>/ prefix or a token= query) blanked out."""
    return _SECRETS.sub(r"\1***", path)


def unsupported_route(method: str, path: str, status: int) -> ServiceError:
    """A route cogbox does not serve, named (Backend.AI's client calls some we lack, e.g.
    `session status-history`): a JSON problem, never a bare 404."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    what = "this method on the route" if status == 405 else "the route"
    return ServiceError(
        status, "unsupported-route", f"cogbox does not serve {what} {method} {shown}"
    )
