"""A small typed client for a Slurm cluster: submit a batch job, read its state, cancel it,
read node health.

It drives Slurm's own commands (`sbatch`, `squeue --json`, `sinfo --json`, `scancel`) rather
than a binding: pyslurm follows Slurm's releases and has no build for Debian 12's 22.05, and the
commands' JSON output (Slurm's OpenAPI data_parser, v0.0.38 in 22.05) is the stable machine
form. Every call has a timeout, because Slurm's clients retry a dead controller for about 20 s
before they give up; a timeout or an unreachable controller is `SlurmUnavailable`, not a hang.

In 22.05 `squeue --json` ignores its filters (--jobs), so jobs are picked out here. A job the
controller no longer lists (finished longer than MinJobAge ago) is `JobNotFound`.
"""

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogbox.errors import CogboxError

DEFAULT_TIMEOUT_S = 15.0
MIB = 1024 * 1024
# Job states after which nothing more happens (Slurm's job_state names).
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)
_JOB_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SlurmError(CogboxError):
    """Something went wrong talking to Slurm; the message says what Slurm said."""


class SlurmUnavailable(SlurmError):
    """The Slurm commands are missing, or the controller did not answer in time."""


class JobRejected(SlurmError):
    """Slurm refused the submission (e.g. more memory or cpus than any node has)."""


class JobNotFound(SlurmError):
    """The controller does not know this job (never existed, or finished and purged)."""


@dataclass(frozen=True)
class JobRequest:
    """One batch job: a shell script and the limits Slurm enforces on it."""

    script: str  # the batch script's text, "#!/bin/sh\n..."
    name: str
    memory_bytes: int | None = None  # --mem (per node), rounded up to MiB
    cpus: int | None = None  # -c, cpus per task
    time_limit_s: int | None = None  # --time, Slurm counts whole minutes
    # --output, a path on the node (Slurm's %j patterns allowed); None: /dev/null, not
    # Slurm's default slurm-<id>.out in whatever folder the submitter runs in
    output: str | None = None
    partition: str | None = None
    requeue: bool = True  # False: --no-requeue (a node failure ends the job, never reruns it)


@dataclass(frozen=True)
class Job:
    """What the controller says about one job."""

    job_id: str
    name: str
    state: str  # PENDING, RUNNING, COMPLETED, OUT_OF_MEMORY, ... (Slurm's names)
    reason: str | None  # why it is pending or ended (Resources, Priority, OutOfMemory), or None
    nodes: tuple[str, ...]  # where it runs or ran; empty while pending
    exit_code: int | None  # the batch script's exit status once finished

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class Node:
    """One node's health as the controller sees it."""

    name: str
    state: str  # idle, mixed, allocated, down, ... (sinfo's base state)
    flags: tuple[str, ...]  # NOT_RESPONDING, DRAIN, ...
    reason: str | None  # the admin's or controller's reason (e.g. "Not responding")
    cpus: int
    memory_mb: int

    @property
    def healthy(self) -> bool:
        bad = {"NOT_RESPONDING", "DRAIN", "DRAINED", "DRAINING", "FAIL"}
        return self.state not in {"down", "drained", "fail", "unknown"} and not bad & set(
            self.flags
        )


class SlurmClient:
    """Slurm's commands against one cluster (`conf`: its slurm.conf, else SLURM_CONF)."""

    def __init__(self, conf: Path | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.conf = conf
        self.timeout_s = timeout_s

    def submit(self, request: JobRequest) -> str:
        """Submit the batch job; its job id. JobRejected carries Slurm's reason."""
        argv = ["sbatch", "--parsable", f"--job-name={_job_name(request.name)}"]
        if request.memory_bytes is not None:
            mebibytes = -(-_positive(request.memory_bytes, "memory_bytes") // MIB)  # round up
            argv.append(f"--mem={mebibytes}M")
        if request.cpus is not None:
            argv.append(f"--cpus-per-task={_positive(request.cpus, 'cpus')}")
        if request.time_limit_s is not None:
            seconds = _positive(request.time_limit_s, "time_limit_s")
            argv.append(f"--time={seconds // 60}:{seconds % 60:02d}")
        argv.append(f"--output={request.output or '/dev/null'}")
        if request.partition is not None:
            argv.append(f"--partition={request.partition}")
        if not request.requeue:
            argv.append("--no-requeue")
        proc = self._run(argv, stdin=request.script)
        if proc.returncode != 0:
            message = _slurm_message(proc.stderr)
            if _unreachable(message):
                raise SlurmUnavailable(f"sbatch: {message}")
            raise JobRejected(f"Slurm refused job {request.name!r}: {message}")
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch printed no job id: {proc.stdout.strip()!r}")
        return job_id

    def jobs(self) -> dict[str, Job]:
        """Every job the controller lists, by id."""
        data = self._json(["squeue", "--json"])
        return {job.job_id: job for job in map(_job, data.get("jobs", []))}

    def job(self, job_id: str) -> Job:
        found = self.jobs().get(job_id)
        if found is None:
            raise JobNotFound(f"Slurm does not know job {job_id}")
        return found

    def cancel(self, job_id: str) -> None:
        """Cancel the job (pending or running); cancelling a finished job is not an error."""
        proc = self._run(["scancel", job_id])
        if proc.returncode != 0:
            message = _slurm_message(proc.stderr)
            if _unreachable(message):
                raise SlurmUnavailable(f"scancel: {message}")
            if "Invalid job id" in message:
                raise JobNotFound(f"Slurm does not know job {job_id}")
            raise SlurmError(f"scancel {job_id}: {message}")

    def nodes(self) -> dict[str, Node]:
        """Every node's health, by name."""
        data = self._json(["sinfo", "--json"])
        return {node.name: node for node in map(_node, data.get("nodes", []))}

    def _json(self, argv: Sequence[str]) -> Mapping[str, Any]:
        proc = self._run(argv)
        if proc.returncode != 0:
            message = _slurm_message(proc.stderr)
            error = SlurmUnavailable if _unreachable(message) else SlurmError
            raise error(f"{argv[0]}: {message}")
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise SlurmError(f"{argv[0]} --json printed no JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SlurmError(f"{argv[0]} --json printed {type(data).__name__}, not an object")
        return data

    def _run(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        if self.conf is not None:
            env["SLURM_CONF"] = str(self.conf)
        try:
            return subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SlurmUnavailable(
                f"{argv[0]} is not installed (Debian package slurm-client)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnavailable(
                f"{argv[0]} got no answer from the Slurm controller in {self.timeout_s:g} s"
            ) from exc


def _job(raw: Mapping[str, Any]) -> Job:
    state = str(raw.get("job_state", "UNKNOWN"))
    reason = raw.get("state_reason")
    nodes = str(raw.get("nodes") or "")
    exit_code = raw.get("exit_code")
    return Job(
        job_id=str(raw["job_id"]),
        name=str(raw.get("name", "")),
        state=state,
        reason=None if reason in (None, "", "None") else str(reason),
        nodes=tuple(expand_hostlist(nodes)) if nodes else (),
        # 22.05 reports the wait status (exit code in the high byte), as sacct's "3:0".
        exit_code=(exit_code >> 8) & 0xFF
        if isinstance(exit_code, int) and state in FINISHED_STATES
        else None,
    )


def _node(raw: Mapping[str, Any]) -> Node:
    reason = raw.get("reason")
    return Node(
        name=str(raw["name"]),
        state=str(raw.get("state", "unknown")).lower(),
        flags=tuple(str(flag) for flag in raw.get("state_flags", [])),
        reason=str(reason) if reason else None,
        cpus=int(raw.get("cpus", 0)),
        memory_mb=int(raw.get("real_memory", 0)),
    )


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list ("node[1-3,5],gpu7") as names."""
    names: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not high:
                names.append(prefix + low)
                continue
            width = len(low)
            names.extend(f"{prefix}{i:0{width}d}" for i in range(int(low), int(high) + 1))
    return names


def _job_name(name: str) -> str:
    if not _JOB_NAME.match(name):
        raise JobRejected(f"job name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def _positive(value: int, field: str) -> int:
    if value <= 0:
        raise JobRejected(f"{field} must be positive, got {value}")
    return value


def _slurm_message(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or "no message"


def _unreachable(message: str) -> bool:
    return "Unable to contact slurm controller" in message or "Socket timed out" in message
