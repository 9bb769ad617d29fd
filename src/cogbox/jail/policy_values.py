"""The value types of a policy file: sizes, seconds, cores, env names and container paths.

Each parses what a person writes ("2g", "unlimited", 1.5) into the resolved value, or raises
ValueError with the message `PolicyError` shows next to the field's line.
"""

import math
import posixpath
import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator

from cogbox import sizes

_UNLIMITED = ("unlimited", None)


def parse_size(value: object) -> int:
    """Positive bytes from an int or a string like "2g", "512m", "1.5GiB" (binary units)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size such as 4g, 512m or a number of bytes, got {value!r}")
    size = sizes.parse_size(value)
    if size <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return size


def _required_size(value: object) -> int:
    if value in _UNLIMITED:
        raise ValueError("this limit cannot be unlimited")
    return parse_size(value)


def _optional_size(value: object) -> int | None:
    return None if value in _UNLIMITED else parse_size(value)


def _optional_seconds(value: object) -> float | None:
    if value in _UNLIMITED:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        if not math.isfinite(value):
            raise ValueError("use null or 'unlimited' for no limit")
        return float(value)
    raise ValueError(f"expected a positive number of seconds or 'unlimited', got {value!r}")


def _optional_whole_seconds(value: object) -> int | None:
    seconds = _optional_seconds(value)
    # RLIMIT_CPU counts whole seconds; round up so a limit is never tighter than written.
    return None if seconds is None else math.ceil(seconds)


def _optional_cpus(value: object) -> float | None:
    if value in _UNLIMITED:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.01 <= value <= 1024:
        return float(value)
    raise ValueError(f"expected a number of CPU cores between 0.01 and 1024, got {value!r}")


def _env_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string, got {value!r}")
    text = str(value)
    if "\0" in text:
        raise ValueError("environment values cannot contain NUL bytes")
    return text


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def container_path(value: object) -> str:
    if not isinstance(value, str | Path):
        raise ValueError(f"expected an absolute path, got {value!r}")
    text = str(value)
    if not text.startswith("/") or ".." in text.split("/") or "\0" in text:
        raise ValueError(f"expected an absolute path without '..', got {text!r}")
    return "/" + posixpath.normpath(text).lstrip("/")  # normpath keeps a leading "//"


RequiredSize = Annotated[int, BeforeValidator(_required_size)]
OptionalSize = Annotated[int | None, BeforeValidator(_optional_size)]
OptionalSeconds = Annotated[float | None, BeforeValidator(_optional_seconds)]
OptionalWholeSeconds = Annotated[int | None, BeforeValidator(_optional_whole_seconds)]
OptionalCpus = Annotated[float | None, BeforeValidator(_optional_cpus)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
ContainerPath = Annotated[str, BeforeValidator(container_path)]
