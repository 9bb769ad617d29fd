"""The HTTP service: a manager (auth, persistence, session bookkeeping) and one local agent.

    cogbox serve --port 8090

Surfaces, each a thin adapter over the same `SessionManager` and event model:
Backend.AI's REST/WebSocket API (so the unmodified `backend.ai` client works) at `/`,
cogbox's native API at `/v1` (described by `/openapi.json`), and Jupyter Server's kernels
API at `/api` (so Jupyter's clients, e.g. nbclient through a gateway, use sessions as kernels).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cogbox.service.app import create_app, serve
    from cogbox.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Imported on first use: a client module (`cogbox.service.client`, what `cogbox session`
    # needs) must not pull in the server's stack (SQLAlchemy, jupyter_client, zmq).
    if name == "ServiceConfig":
        from cogbox.service.config import ServiceConfig

        return ServiceConfig
    if name in ("create_app", "serve"):
        from cogbox.service import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
