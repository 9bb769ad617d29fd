"""The service's one error type: an HTTP status, a short code and a message for the user,
and the one table (`PROBLEMS`) that gives the typed errors of other parts theirs.

`public_message` is the one place that turns internal text (an exception's message, a jail's
exit message) into text a tenant may read: the host's own folders (the data dir, the
service's state folder, the checkout, kernels' runtime folders) never reach error bodies or
session events; paths inside the jail (/home/work/...) are kept.
"""

import functools
import logging
import re
from typing import Any

from cogbox.agent.errors import ChannelError
from cogbox.config import REPO_IMAGES_DIR, data_dir, recipes_dir
from cogbox.errors import CogboxError
from cogbox.images.store import ImageNotFound
from cogbox.kernel.connection import runtime_base
from cogbox.kernel.files import FileError, PathNotFoundError, UnsafePathError, WorkdirFullError
from cogbox.service.config import service_dir

PROBLEM_BASE = "https://api.backend.ai/probs/"
HOST_PATH_PLACEHOLDER = "<host path>"


class ServiceError(CogboxError):
    """A request the service refuses; rendered as a JSON body every API surface shares.

    The body keeps Backend.AI's problem shape (`type`, `title`, `msg`) so its client shows
    the message, plus `error` (the short code) and `status`. The message goes through
    `public_message`, so no caller can leak a host path by quoting an exception.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        message = public_message(message)
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "status": self.status,
            "type": PROBLEM_BASE + self.code,
            "title": self.message,
            "msg": self.message,
        }


# The errors other parts raise where the fact is known, and what a client sees of them. The
# most specific class of an error's own (its MRO) that is listed wins; the kernel and the
# agent's channel never pick HTTP statuses, the edge (app.py's middleware) asks `problem`.
PROBLEMS: dict[type[CogboxError], tuple[int, str]] = {
    PathNotFoundError: (404, "not-found"),
    UnsafePathError: (400, "invalid-path"),
    WorkdirFullError: (413, "workdir-full"),
    FileError: (400, "file-error"),
    ImageNotFound: (404, "image-not-found"),
    # The agent is away (restarting after a crash: serve brings it back in seconds): the
    # request may be sent again, not a fault of the service or the request.
    ChannelError: (503, "agent-unavailable"),
}


def problem(exc: BaseException) -> ServiceError | None:
    """`exc` as the problem a client sees (ServiceError), or None for an error the table
    does not know (an internal error: the edge answers 500 and logs it)."""
    if isinstance(exc, ServiceError):
        return exc
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            status, code = PROBLEMS[cls]
            return ServiceError(status, code, str(exc))
    return None


def listed_problem(exc: CogboxError) -> ServiceError:
    """`problem` of an error that `PROBLEMS` lists, for code that must hold the ServiceError
    itself before the edge (a failed start recorded on its session, a job's outcome)."""
    known = problem(exc)
    if known is None:
        raise TypeError(f"{type(exc).__name__} is not listed in PROBLEMS")
    return known


def public_message(text: str) -> str:
    """`text` with every path under one of the host's own folders replaced by a placeholder."""
    return _host_paths().sub(HOST_PATH_PLACEHOLDER, text)


@functools.cache
def _host_paths() -> re.Pattern[str]:
    roots = {
        str(path)
        for path in (
            data_dir(),
            service_dir(),
            recipes_dir(),
            REPO_IMAGES_DIR.parent,
            runtime_base(),
        )
    }
    # Longest first, so a folder inside another is replaced whole; a root matches only as a
    # whole path component ("/var/lib/cogbox" and "/var/lib/cogbox/x", not "/var/lib/cogboxy").
    alternatives = "|".join(re.escape(root) for root in sorted(roots, key=len, reverse=True))
    return re.compile(rf"(?:{alternatives})(?![^/\s'\"])(?:/[^\s'\",;:)]*)?")


def unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "auth-failed", message)


def forbidden(message: str) -> ServiceError:
    return ServiceError(403, "forbidden", message)


def not_found(message: str) -> ServiceError:
    return ServiceError(404, "not-found", message)


def bad_request(message: str) -> ServiceError:
    return ServiceError(400, "invalid-api-params", message)


def conflict(message: str) -> ServiceError:
    return ServiceError(409, "conflict", message)


def too_large(what: str, limit: int) -> ServiceError:
    """413 for a body or file over `limit` bytes, naming it and the limit."""
    return ServiceError(413, "too-large", f"{what} is larger than the limit of {_size(limit)}")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"


def problem_or_internal(exc: BaseException, where: str) -> ServiceError:
    """`exc` as the problem a client sees; a bug (an error the table does not know) is
    logged with its traceback, `where` naming it, and the client told only "internal"."""
    known = problem(exc)
    if known is None:
        logging.getLogger(__name__).error("unexpected error in %s", where, exc_info=exc)
        known = ServiceError(500, "internal-error", "internal error; see the service log")
    return known
