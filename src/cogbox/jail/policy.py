"""The jail policy: Backend.AI's `policy.yml` format plus cogbox's limits, network and mounts.

`parse_policy`/`load_policy` turn YAML into a resolved, typed `Policy`. Every field either
maps onto a mechanism that enforces it (see docs/jail.md) or is refused with a `PolicyError`
that names the file, the line and the field; nothing is silently ignored.

The model is policy_model.py, the file's own shape policy_document.py, its value types
policy_values.py; this module loads and resolves, and reports problems by line.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cogbox.errors import CogboxError
from cogbox.jail.policy_document import _LIMIT_ATTRIBUTES, _PolicyDoc
from cogbox.jail.policy_model import (
    DEFAULT_LIMITS,
    DEFAULT_PRESERVED_ENV_KEYS,
    DEFAULT_WHITELIST_PATHS,
    EVERYTHING,
    JAIL_GID,
    JAIL_UID,
    OPS,
    WRITABLE_MOUNTS,
    Limits,
    Policy,
    ReadonlyBind,
    glob_directory,
)
from cogbox.jail.syscalls import DEFAULT_ALLOWED_SYSCALLS, syscall_name_problem
from cogbox.yamlsource import YamlDocument

# The model (policy_model.py) is part of this module's interface: callers load and use a
# policy through one import.
__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PRESERVED_ENV_KEYS",
    "JAIL_GID",
    "JAIL_UID",
    "Limits",
    "Policy",
    "PolicyError",
    "default_policy",
    "load_policy",
    "parse_policy",
    "policy_or_default",
]


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

        directories = {glob_directory(glob) for glob in result[op]}
        if op in ("OP_OPEN", "OP_ACCESS", "OP_STAT") and EVERYTHING not in directories:
            issues.append(
                _Issue(
                    ("whitelist_paths", op),
                    f'[] cannot be enforced: {op} must be ["*"]; path rules need Landlock, '
                    "which cogbox does not use yet",
                )
            )
        if op == "OP_CHMOD" and EVERYTHING not in directories:
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


def _glob_problem(op: str, glob: str, exec_mounts: set[str]) -> str | None:
    directory = glob_directory(glob)
    if directory == EVERYTHING:
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
