"""The service's one error type: an HTTP status, a short code and a message for the user."""

from typing import Any

from cogbox.errors import CogboxError

PROBLEM_BASE = "https://api.backend.ai/probs/"


class ServiceError(CogboxError):
    """A request the service refuses; rendered as a JSON body every API surface shares.

    The body keeps Backend.AI's problem shape (`type`, `title`, `msg`) so its client shows
    the message, plus `error` (the short code) and `status`.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
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
