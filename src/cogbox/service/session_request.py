"""A new session's request, as every API surface builds it, and the checks of it that need
neither the database nor the agent (each refusal a 400 naming the field)."""

import re
import shutil
from dataclasses import dataclass, field

from cogbox.jail.runtimes import RUNTIMES
from cogbox.service.config import ServiceConfig
from cogbox.service.create_options import check_cpus, session_env
from cogbox.service.errors import bad_request

SESSION_TYPES = ("interactive", "batch")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,62}[A-Za-z0-9]")  # used with fullmatch


@dataclass(frozen=True)
class CreateRequest:
    """A new session: its image, optional name, and its own idle/lifetime limits."""

    image: str
    name: str | None = None
    idle_timeout: float | None = None
    max_lifetime: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    reuse_if_exists: bool = False
    memory_bytes: int | None = None  # its jail's memory limit; default: the image policy's
    output_limit: int | None = None  # characters of a run sent to clients; default: service's
    session_type: str = "interactive"  # or "batch": a job (cogbox.service.jobs)
    startup_command: str | None = None  # a job's command, run once in /home/work
    dependencies: list[str] = field(default_factory=list)  # ids or names a job waits for
    batch_timeout: float | None = None  # a job's time limit, seconds
    # Storage folders to mount (names) and where (name -> path); see service.vfolders.
    mounts: list[str] = field(default_factory=list)
    mount_map: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None  # its jail's cpu quota in cores; default: the image policy's
    bootstrap_script: str | None = None  # a shell script run before the first cell
    runtime: str = "runc"  # its jail's OCI runtime: runc, or runsc (gVisor)


def check_request(request: CreateRequest, name: str, config: ServiceConfig) -> tuple[float, float]:
    """Refuse what no session could be made of; the session's idle timeout and lifetime
    (its own, or the service's defaults)."""
    session_env(request.env, "env")  # every API: no variable the jail keeps for itself
    if request.cpus is not None:
        check_cpus(request.cpus, "cpus")
    if request.runtime not in RUNTIMES:
        raise bad_request(
            f"'runtime' must be one of {', '.join(RUNTIMES)}, got {request.runtime!r}"
        )
    if request.runtime != "runc" and shutil.which(request.runtime) is None:
        raise bad_request(f"'runtime' {request.runtime} is not installed on this host")
    if request.bootstrap_script is not None and "\0" in request.bootstrap_script:
        raise bad_request("'bootstrap_script' must be the text of a shell script (no NUL)")
    check_name(name)
    idle = request.idle_timeout or config.idle_timeout
    lifetime = request.max_lifetime or config.max_lifetime
    if idle <= 0 or lifetime <= 0:
        raise bad_request("idle_timeout and max_lifetime must be positive numbers of seconds")
    if request.session_type not in SESSION_TYPES:
        raise bad_request(f"'type' must be interactive or batch, got {request.session_type!r}")
    batch = request.session_type == "batch"
    if batch and not (request.startup_command or "").strip():
        raise bad_request("a batch session needs 'startupCommand': the command it runs")
    if not batch and (request.startup_command or request.dependencies):
        raise bad_request(
            "'startupCommand' and 'dependencies' are for batch sessions: add type batch"
        )
    return idle, lifetime


def check_name(name: str) -> None:
    """Refuse a session name that is not 4-64 letters, digits, '.', '_' or '-'."""
    if not _NAME.fullmatch(name):
        raise bad_request(
            f"invalid session name {name!r}: use 4-64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
