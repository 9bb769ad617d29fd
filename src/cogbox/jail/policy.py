"""The jail policy: Backend.AI's `policy.yml` format plus cogbox's limits, network and mounts.

`parse_policy`/`load_policy` turn YAML into a resolved, typed `Policy`. Every field either
maps onto a mechanism that enforces it (see docs/jail.md) or is refused with a `PolicyError`
that names the file, the line and the field; nothing is silently ignored.
"""

import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from cogbox import sizes
from cogbox.errors import CogboxError
from cogbox.images.paths import TMPDIR, WORKDIR
from cogbox.jail.syscalls import DEFAULT_ALLOWED_SYSCALLS, syscall_name_problem
from cogbox.yamlsource import YamlDocument

# The user code runs as *inside* every jail (the images' work user): never root. On the
# host it is another id per session, `Identity.host_uid` (see identity.py).
JAIL_UID = 1000
JAIL_GID = 1000
# Writable mounts the sandbox user (uid 1000) owns the contents of; everything else it sees is
# the read-only, root-owned image or kernel filesystems.
WRITABLE_MOUNTS = (WORKDIR, TMPDIR)
OPS = ("OP_OPEN", "OP_ACCESS", "OP_EXEC", "OP_STAT", "OP_CHMOD")

# Container paths an extra bind may not cover: the jail's own mounts and kernel filesystems.
_RESERVED_DESTINATIONS = ("/", "/proc", "/sys", "/dev", WORKDIR, TMPDIR)
# Host paths a read-only bind may not expose.
_REFUSED_SOURCES = ("/", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc")
_EVERYTHING = "*"


class PolicyError(CogboxError):
    """A policy file that cannot be enforced as written; lists every problem with its line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{source}: {len(problems)} problems\n  " + "\n  ".join(problems)
        super().__init__(message)


# ---------------------------------------------------------------------------- value parsers

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


def _container_path(value: object) -> str:
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
ContainerPath = Annotated[str, BeforeValidator(_container_path)]


# ---------------------------------------------------------------------------- resolved model


class Limits(BaseModel):
    """Resource limits, resolved; `None` means no limit. See docs/jail.md for who enforces each."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int  # memory cgroup (memory + swap = memory: no swap)
    cpus: float | None  # cpu cgroup quota, in cores
    pids: int  # pids cgroup: live processes AND threads
    nofile: int  # RLIMIT_NOFILE
    fsize_bytes: int | None  # RLIMIT_FSIZE: largest file a process may write
    workdir_quota_bytes: int | None  # launcher: disk quota of /home/work
    tmp_size_bytes: int  # tmpfs size= of /tmp
    shm_size_bytes: int  # tmpfs size= of /dev/shm
    cpu_time_seconds: int | None  # RLIMIT_CPU, per process
    wall_time_seconds: float | None  # launcher watchdog: the session's lifetime


class ReadonlyBind(BaseModel):
    """A host directory shown read-only inside the jail (policy `mounts.readonly_binds`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Annotated[Path, BeforeValidator(_container_path)]
    destination: ContainerPath

    @field_validator("source")
    @classmethod
    def _not_host_control(cls, source: Path) -> Path:
        # "ro" does not stop connect() on a socket or ioctl() on a device, so binds of the
        # host's root, kernel filesystems and runtime sockets (/run/docker.sock...) are refused.
        for refused in _REFUSED_SOURCES:
            if source == Path(refused) or (refused != "/" and source.is_relative_to(refused)):
                raise ValueError(f"binding host {source} would expose the host's control files")
        return source

    @field_validator("destination")
    @classmethod
    def _not_reserved(cls, destination: str) -> str:
        for reserved in _RESERVED_DESTINATIONS:
            if destination == reserved or (
                reserved in ("/proc", "/sys", "/dev") and destination.startswith(reserved + "/")
            ):
                raise ValueError(f"{destination} is one of the jail's own mounts")
        return destination


class Policy(BaseModel):
    """A resolved jail policy: defaults merged in, every value checked to be enforceable."""

    model_config = ConfigDict(frozen=True)

    source: str
    # Backend.AI's fields, as accepted (see docs/jail.md for their meaning here).
    whitelist_paths: Mapping[str, tuple[str, ...]]
    exec_allowance: int  # always -1: exec counting is not enforceable
    fork_allowance: int  # -1 (unlimited) or 0 (threads only, enforced by seccomp)
    max_child_procs: int | None  # as written; resolved into limits.pids
    extra_envs: Mapping[str, str]
    preserved_env_keys: tuple[str, ...]
    allowed_syscalls: tuple[str, ...]  # sorted; argument rules live in the seccomp renderer
    diff_to_default: bool
    # cogbox's extensions.
    limits: Limits
    network: Literal["none", "host"]
    readonly_binds: tuple[ReadonlyBind, ...]
    gpu: bool = False  # the host's NVIDIA GPUs in the jail (cogbox.jail.gpu); refused without

    def with_limits(self, **changes: Any) -> "Policy":
        """This policy with some resolved limits replaced, e.g. `memory_bytes=1 << 30`."""
        limits = Limits.model_validate({**self.limits.model_dump(), **changes})
        return self.model_copy(update={"limits": limits})

    @property
    def forks_allowed(self) -> bool:
        """False when `fork_allowance: 0`: only threads may be created (seccomp on clone)."""
        return self.fork_allowance != 0

    def exec_allowed_at(self, mount_point: str) -> bool:
        """Whether programs may be run from the mount at `mount_point` (else it is `noexec`).

        The read-only image root always allows exec: it holds the interpreter.
        """
        if mount_point == "/":
            return True
        directories = {_glob_directory(glob) for glob in self.whitelist_paths["OP_EXEC"]}
        return _EVERYTHING in directories or posixpath.normpath(mount_point) in directories

    @property
    def chmod_globs(self) -> tuple[str, ...] | None:
        """OP_CHMOD's globs when they narrow where chmod works; None when they allow it anywhere.

        Narrowed globs are checked on every chmod by the launcher's chmod guard (seccomp user
        notification, see chmod_guard.py); file ownership stays the enforcement beneath it.
        """
        globs = self.whitelist_paths["OP_CHMOD"]
        if any(_glob_directory(glob) == _EVERYTHING for glob in globs):
            return None
        return globs

    def describe(self) -> list[str]:
        """A few lines saying what this policy enforces, for `cogbox policy check`."""
        limits = self.limits

        def size(value: int | None) -> str:
            return "unlimited" if value is None else _human_size(value)

        def seconds(value: float | None) -> str:
            return "unlimited" if value is None else f"{value:g}s"

        exec_mounts = [
            m for m in (*WRITABLE_MOUNTS, *self._bind_points()) if self.exec_allowed_at(m)
        ]
        return [
            f"syscalls: {len(self.allowed_syscalls)} allowed, others fail with EPERM "
            "(clone3 with ENOSYS); x86_64 only",
            f"memory {size(limits.memory_bytes)}, cpus "
            f"{'unlimited' if limits.cpus is None else f'{limits.cpus:g}'}, "
            f"pids {limits.pids}, open files {limits.nofile}",
            f"file size {size(limits.fsize_bytes)}, /home/work quota "
            f"{size(limits.workdir_quota_bytes)}, /tmp {size(limits.tmp_size_bytes)}, "
            f"/dev/shm {size(limits.shm_size_bytes)}",
            f"cpu time {seconds(limits.cpu_time_seconds)} per process, "
            f"wall time {seconds(limits.wall_time_seconds)}",
            f"network: {self.network}; forks: {'allowed' if self.forks_allowed else 'denied'}; "
            f"exec from: image root{''.join(', ' + m for m in exec_mounts)}",
            f"environment: {len(self.preserved_env_keys)} preserved keys, "
            f"{len(self.extra_envs)} extra",
        ]

    def _bind_points(self) -> list[str]:
        return [bind.destination for bind in self.readonly_binds]


def _human_size(value: int) -> str:
    for unit, factor in (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


# ---------------------------------------------------------------------------- file model


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WhitelistPathsDoc(_Document):
    OP_OPEN: list[str] | None = None
    OP_ACCESS: list[str] | None = None
    OP_EXEC: list[str] | None = None
    OP_STAT: list[str] | None = None
    OP_CHMOD: list[str] | None = None


class _LimitsDoc(_Document):
    memory: RequiredSize | None = None
    cpus: OptionalCpus = None
    pids: Annotated[StrictInt, Field(ge=1)] | None = None
    nofile: Annotated[StrictInt, Field(ge=16, le=1 << 20)] | None = None
    file_size: OptionalSize = None
    workdir_quota: OptionalSize = None
    tmp_size: RequiredSize | None = None
    shm_size: RequiredSize | None = None
    cpu_time_seconds: OptionalWholeSeconds = None
    wall_time_seconds: OptionalSeconds = None


# YAML key in `limits:` -> attribute of `Limits`.
_LIMIT_ATTRIBUTES = {
    "memory": "memory_bytes",
    "cpus": "cpus",
    "pids": "pids",
    "nofile": "nofile",
    "file_size": "fsize_bytes",
    "workdir_quota": "workdir_quota_bytes",
    "tmp_size": "tmp_size_bytes",
    "shm_size": "shm_size_bytes",
    "cpu_time_seconds": "cpu_time_seconds",
    "wall_time_seconds": "wall_time_seconds",
}


class _MountsDoc(_Document):
    readonly_binds: list[ReadonlyBind] = []


class _PolicyDoc(_Document):
    whitelist_paths: _WhitelistPathsDoc | None = None
    exec_allowance: StrictInt = -1
    fork_allowance: StrictInt = -1
    max_child_procs: StrictInt | None = None
    extra_envs: dict[EnvName, EnvValue] = {}
    preserved_env_keys: list[EnvName] = []
    allowed_syscalls: list[str] = []
    diff_to_default: StrictBool = False
    limits: _LimitsDoc | None = None
    network: Literal["none", "host"] = "none"
    mounts: _MountsDoc | None = None
    gpu: StrictBool = False


# ---------------------------------------------------------------------------- defaults

DEFAULT_WHITELIST_PATHS: Mapping[str, tuple[str, ...]] = {
    "OP_OPEN": ("*",),
    "OP_ACCESS": ("*",),
    "OP_EXEC": ("*",),
    "OP_STAT": ("*",),
    "OP_CHMOD": ("/home/work/*", "/tmp/*"),
}
DEFAULT_PRESERVED_ENV_KEYS = (
    "HOME",
    "PATH",
    "LANG",
    "USER",
    "SHELL",
    "TERM",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
)
DEFAULT_LIMITS = Limits(
    memory_bytes=2 << 30,
    cpus=1.0,
    pids=128,
    nofile=1024,
    fsize_bytes=2 << 30,
    workdir_quota_bytes=4 << 30,
    tmp_size_bytes=512 << 20,
    shm_size_bytes=64 << 20,
    cpu_time_seconds=None,  # RLIMIT_CPU is per process: a capped kernel dies mid-session
    wall_time_seconds=24 * 3600.0,
)


# ---------------------------------------------------------------------------- loading


Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Issue:
    loc: Loc
    message: str
    line: int | None = None  # when known better than the location says (duplicate keys)


def load_policy(path: Path | str) -> Policy:
    """Read and resolve the policy file at `path`; raises `PolicyError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [f"{path}: cannot read policy: {exc}"]) from exc
    return parse_policy(text, source=str(path))


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Resolve policy YAML `text`; `source` names it in error messages."""
    try:
        document = YamlDocument(text, source)
    except ValueError as exc:  # not YAML; the message already names file and line
        raise PolicyError(source, [str(exc)]) from exc
    if not isinstance(document.data, dict):
        raise PolicyError(source, [f"{source}:1: a policy must be a mapping of fields"])

    issues = [_Issue(loc, "is given twice", line) for loc, line in document.duplicates]
    if not issues:
        try:
            written = _PolicyDoc.model_validate(document.data)
        except ValidationError as exc:
            issues = [_issue_from_pydantic(error) for error in exc.errors()]
        else:
            policy, issues = _resolve(written, source)
            if not issues:
                return policy
    located = [(issue.line or document.line_of(issue.loc), issue) for issue in issues]
    located.sort(key=lambda pair: pair[0])
    raise PolicyError(source, [_format(issue, line, source) for line, issue in located])


def default_policy() -> Policy:
    """The policy used when an image ships none: safe without edits."""
    return parse_policy("", source="<default policy>")


def policy_or_default(path: Path) -> Policy:
    """The policy file at `path` (an image's or a recipe's), or the default where none is."""
    return load_policy(path) if path.is_file() else default_policy()


def _resolve(doc: _PolicyDoc, source: str) -> tuple[Policy, list[_Issue]]:
    issues: list[_Issue] = []
    given = doc.model_fields_set
    merge = doc.diff_to_default

    if doc.exec_allowance != -1:
        issues.append(
            _Issue(
                ("exec_allowance",),
                f"{doc.exec_allowance} cannot be enforced: counting execs needs ptrace, which "
                "the jail does not use, and seccomp cannot deny execve without also stopping "
                "the jail's own start. Use -1, restrict where programs run from with "
                "whitelist_paths.OP_EXEC (noexec mounts), and bound processes with "
                "max_child_procs",
            )
        )
    if doc.fork_allowance not in (-1, 0):
        issues.append(
            _Issue(
                ("fork_allowance",),
                f"{doc.fork_allowance} cannot be enforced: counting forks needs ptrace, which "
                "the jail does not use. Use -1 (unlimited) or 0 (threads only, enforced by "
                "seccomp), and bound live processes with max_child_procs (pids cgroup)",
            )
        )

    limits = _resolve_limits(doc, issues)

    binds = tuple(doc.mounts.readonly_binds) if doc.mounts else ()
    seen: set[str] = set()
    for index, bind in enumerate(binds):
        if bind.destination in seen:
            issues.append(
                _Issue(
                    ("mounts", "readonly_binds", index, "destination"),
                    f"{bind.destination} is bound twice",
                )
            )
        seen.add(bind.destination)

    whitelist = _resolve_whitelist(doc, merge, binds, issues)

    for index, name in enumerate(doc.allowed_syscalls):
        try:
            problem = syscall_name_problem(name)
        except OSError as exc:
            problem = str(exc)
        if problem:
            issues.append(_Issue(("allowed_syscalls", index), problem))

    def merged(default: tuple[str, ...], field: str, value: list[str]) -> tuple[str, ...]:
        if field not in given:
            return default
        return _union(default, value) if merge else tuple(dict.fromkeys(value))

    allowed = merged(
        tuple(sorted(DEFAULT_ALLOWED_SYSCALLS)), "allowed_syscalls", doc.allowed_syscalls
    )
    preserved = merged(DEFAULT_PRESERVED_ENV_KEYS, "preserved_env_keys", doc.preserved_env_keys)
    extra_envs = dict(doc.extra_envs)

    policy = Policy(
        source=source,
        whitelist_paths=whitelist,
        exec_allowance=-1,
        fork_allowance=doc.fork_allowance if doc.fork_allowance in (-1, 0) else -1,
        max_child_procs=doc.max_child_procs,
        extra_envs=extra_envs,
        preserved_env_keys=preserved,
        allowed_syscalls=tuple(sorted(set(allowed))),
        diff_to_default=merge,
        limits=limits,
        network=doc.network,
        readonly_binds=binds,
        gpu=doc.gpu,
    )
    return policy, issues


def _resolve_limits(doc: _PolicyDoc, issues: list[_Issue]) -> Limits:
    values = DEFAULT_LIMITS.model_dump()
    written = doc.limits
    if written is not None:
        for key in written.model_fields_set:
            value = getattr(written, key)
            if value is None and key in ("memory", "pids", "nofile", "tmp_size", "shm_size"):
                issues.append(_Issue(("limits", key), "this limit cannot be unlimited"))
                continue
            values[_LIMIT_ATTRIBUTES[key]] = value

    if doc.max_child_procs is not None:
        if doc.max_child_procs < 1:
            issues.append(
                _Issue(
                    ("max_child_procs",),
                    f"{doc.max_child_procs} cannot be enforced: the pids cgroup needs a positive "
                    "limit; leave max_child_procs out to use limits.pids",
                )
            )
        elif written is not None and "pids" in written.model_fields_set:
            if written.pids != doc.max_child_procs:
                issues.append(
                    _Issue(
                        ("max_child_procs",),
                        f"{doc.max_child_procs} conflicts with limits.pids: {written.pids}; both "
                        "set the same pids cgroup limit, keep one",
                    )
                )
        else:
            values["pids"] = doc.max_child_procs
    return Limits(**values)


def _resolve_whitelist(
    doc: _PolicyDoc,
    merge: bool,
    binds: tuple[ReadonlyBind, ...],
    issues: list[_Issue],
) -> dict[str, tuple[str, ...]]:
    written = doc.whitelist_paths
    result: dict[str, tuple[str, ...]] = {}
    exec_mounts = {*WRITABLE_MOUNTS, *(bind.destination for bind in binds)}
    for op in OPS:
        globs: list[str] | None = getattr(written, op) if written is not None else None
        default = DEFAULT_WHITELIST_PATHS[op]
        if globs is None:
            result[op] = default
            continue
        glob_issues = [
            _Issue(("whitelist_paths", op, index), problem)
            for index, glob in enumerate(globs)
            if (problem := _glob_problem(op, glob, exec_mounts))
        ]
        issues.extend(glob_issues)
        result[op] = _union(default, globs) if merge else tuple(dict.fromkeys(globs))
        if glob_issues:
            continue

        directories = {_glob_directory(glob) for glob in result[op]}
        if op in ("OP_OPEN", "OP_ACCESS", "OP_STAT") and _EVERYTHING not in directories:
            issues.append(
                _Issue(
                    ("whitelist_paths", op),
                    f'[] cannot be enforced: {op} must be ["*"]; path rules need Landlock, '
                    "which cogbox does not use yet",
                )
            )
        if op == "OP_CHMOD" and _EVERYTHING not in directories:
            for mount in WRITABLE_MOUNTS:
                if mount not in directories:
                    issues.append(
                        _Issue(
                            ("whitelist_paths", op),
                            f"chmod under {mount} cannot be denied: the sandbox user owns what "
                            f"it creates there; add '{mount}/*'",
                        )
                    )
    return result


_GLOB_CHARS = re.compile(r"[*?\[\]{}]")


def _glob_directory(glob: str) -> str:
    """The directory a whitelist glob covers ("/home/work/*" -> "/home/work"), or "*" for all."""
    text = glob.strip()
    if text in ("*", "**", "/", "/*", "/**"):
        return _EVERYTHING
    for suffix in ("/**", "/*", "/"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return posixpath.normpath(text) if text.startswith("/") else text


def _glob_problem(op: str, glob: str, exec_mounts: set[str]) -> str | None:
    directory = _glob_directory(glob)
    if directory == _EVERYTHING:
        return None
    if not directory.startswith("/") or _GLOB_CHARS.search(directory) or ".." in glob:
        shape = "an absolute directory followed by /*, or *"
        return f"{glob!r} cannot be enforced: expected {shape}"
    if op == "OP_CHMOD":
        if directory in WRITABLE_MOUNTS:
            return None
        return (
            f"{glob!r} cannot be enforced: chmod is limited by file ownership, and the sandbox "
            "user owns only what it creates under /home/work and /tmp (the image root is "
            "read-only and owned by root). Use '/home/work/*', '/tmp/*' or '*'"
        )
    if op == "OP_EXEC":
        if directory in exec_mounts:
            return None
        mounts = ", ".join(f"'{m}/*'" for m in sorted(exec_mounts))
        return (
            f"{glob!r} cannot be enforced: exec is allowed or denied per mount (noexec), so "
            f"OP_EXEC accepts '*' or one of {mounts}; the read-only image root always allows "
            "exec (it holds the interpreter), and finer rules need Landlock, which cogbox does "
            "not use yet"
        )
    return (
        f"{glob!r} cannot be enforced: {op} path rules need Landlock, which cogbox does not use "
        'yet. Use ["*"]: the jail already limits what is visible with mounts (read-only image, '
        "/home/work, /tmp, mounts.readonly_binds) and masked /proc and /sys paths"
    )


def _union(first: tuple[str, ...], second: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *second]))


# ---------------------------------------------------------------------------- error reporting


def _issue_from_pydantic(error: Any) -> _Issue:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return _Issue(loc, "unknown field")
    # Pydantic names our private model classes ("... or instance of _LimitsDoc"); drop that.
    message = re.sub(r" or instance of _\w+", "", str(error["msg"]).removeprefix("Value error, "))
    if kind != "value_error":
        message = f"{message}, got {error['input']!r}"
    return _Issue(loc, message)


def _format(issue: _Issue, line: int, source: str) -> str:
    field = _field_path(issue.loc)
    return f"{source}:{line}: {field}: {issue.message}"


def _field_path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
