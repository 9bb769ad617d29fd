"""The service's settings: where it listens, which database, and session time limits."""

import os
from pathlib import Path

from pydantic import BaseModel, Field

from cogbox.config import data_dir

DATABASE_URL_ENV = "COGBOX_DATABASE_URL"
SERVICE_DIR_ENV = "COGBOX_SERVICE_DIR"


def service_dir() -> Path:
    """`COGBOX_SERVICE_DIR`, else `service/` in the data dir: the SQLite db, sessions' files."""
    configured = os.environ.get(SERVICE_DIR_ENV)
    return Path(configured) if configured else data_dir() / "service"


def default_database_url() -> str:
    """`COGBOX_DATABASE_URL`, else a SQLite file in the service's folder."""
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{service_dir() / 'cogbox.db'}"


class ServiceConfig(BaseModel):
    """How one `cogbox serve` runs. Times are in seconds."""

    host: str = "127.0.0.1"
    port: int = 8090
    database_url: str = Field(default_factory=default_database_url)
    sessions_dir: Path = Field(default_factory=lambda: service_dir() / "sessions")
    # Sessions' full console logs (cogbox.service.logs), each bounded by log_limit_bytes.
    logs_dir: Path = Field(default_factory=lambda: service_dir() / "logs")
    log_limit_bytes: int = Field(default=1 << 30, gt=0)
    # The characters of one run's output sent to a client (a session may ask for its own);
    # what it drops is still in the session's log.
    output_limit: int = Field(default=524_288, gt=0)
    # Defaults for sessions that do not ask for their own limits.
    idle_timeout: float = 3600.0
    max_lifetime: float = 86400.0
    # A signed request's date may differ from the server's clock by at most this much.
    max_clock_skew: float = 900.0
    reaper_interval: float = 2.0
    # Backend.AI's clients wait on a query-mode execute call this long before "continued".
    query_wait: float = 10.0
    execution_timeout: float | None = None
    # Warm pools: image -> started kernels kept ready for new sessions (cogbox.kernel.pool).
    pools: dict[str, int] = Field(default_factory=dict)
    # Storage folders (cogbox.service.vfolders): where they live, the quota of a folder made
    # without one, and what all the folders of one keypair may hold together.
    vfolders_dir: Path = Field(default_factory=lambda: service_dir() / "vfolders")
    vfolder_quota: int = 10 << 30
    vfolder_keypair_quota: int = 100 << 30
    # Where kernels run: "process", a local `cogbox agent` that `cogbox serve` starts (or
    # finds) in agent_dir and that outlives it; "embedded", in the manager's own process.
    agent: str = Field(default="process", pattern="^(process|embedded|slurm)$")
    agent_dir: Path = Field(default_factory=lambda: service_dir() / "agent")
    # "slurm" (serve --backend slurm, cogbox.cluster.slurm_agent): each session a Slurm job
    # in this partition, its agent dialled at an address on the route to manager_host.
    slurm_partition: str | None = None
    slurm_manager_host: str | None = None
    slurm_start_wait: float = Field(default=30.0, ge=0)
