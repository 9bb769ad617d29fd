"""The HTTP service: a manager (auth, persistence, session bookkeeping) and one local agent.

    cogbox serve --port 8090

Surfaces, each a thin adapter over the same `SessionManager` and event model:
Backend.AI's REST/WebSocket API (so the unmodified `backend.ai` client works) at `/`,
cogbox's native API at `/v1` (described by `/openapi.json`), and Jupyter Server's kernels
API at `/api` (so Jupyter's clients, e.g. nbclient through a gateway, use sessions as kernels).
"""

from cogbox.service.app import create_app, serve
from cogbox.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]
