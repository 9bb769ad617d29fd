"""A session as a Slurm job, and what Slurm's view of that job means for the session.

Pure functions, testable without a cluster: `session_job` turns a kernel's spec into the batch
job that runs its agent (`cogbox agent --listen tcp://<node>:0` on the node Slurm picked, its
folder on the shared filesystem), and `judge` reads a job and its nodes as the session's
placement: pending with Slurm's reason, running on a node, or lost with the reason.
"""

import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cogbox.cluster.slurm import Job, JobRequest, Node

# What the job holds beside the session's jail: the agent (Python, aiohttp, the kernel's
# monitor) and the jail's own overhead. The jail keeps the session's own limit inside it.
AGENT_MEMORY_BYTES = 256 << 20
JOB_PREFIX = "cogbox-"


@dataclass(frozen=True)
class JobPlace:
    """Where a session's job runs its agent from, all on the filesystem the nodes share."""

    folder: Path  # the agent's 0700 folder: key, certificate, agent.address, its log
    sessions_dir: Path
    logs_dir: Path
    vfolders_dir: Path  # storage folders' mounts: a node binds one only if it is mounted there
    python: str  # the interpreter that has cogbox (the same path on every node)
    manager_host: str  # an address of the manager's machine the nodes route to
    env: Mapping[str, str]  # COGBOX_DATA_DIR and the like, so nodes use the shared store


def job_name(session_id: str) -> str:
    return f"{JOB_PREFIX}{session_id}"


def session_job(
    session_id: str,
    place: JobPlace,
    *,
    memory_bytes: int | None,
    cpus: float | None,
    time_limit_s: int | None,
    partition: str | None,
) -> JobRequest:
    """The batch job of one session: the session's memory (plus the agent's share) and cpus
    become `--mem` and `-c`, its lifetime `--time`; a node failure ends it (`--no-requeue`).

    The agent listens on the node's address on the route to the manager (a UDP socket's
    local address: no packet is sent), so a node with several networks publishes the one the
    manager can reach."""
    route = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.connect(({json.dumps(place.manager_host)}, 9)); print(s.getsockname()[0])"
    )
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(place.env.items()))
    python = shlex.quote(place.python)
    agent = [
        *("-m", "cogbox.cli", "agent"),
        *("--dir", str(place.folder)),
        *("--sessions-dir", str(place.sessions_dir)),
        *("--logs-dir", str(place.logs_dir)),
        *("--vfolders-dir", str(place.vfolders_dir)),
    ]
    script = (
        "#!/bin/sh\n"
        "# cogbox: one session's agent, on the node Slurm picked\n"
        f"ADDR=$({python} -c {shlex.quote(route)}) || exit 1\n"
        f"exec env {exports} {python} {' '.join(map(shlex.quote, agent))} "
        '--listen "tcp://$ADDR:0"\n'
    )
    return JobRequest(
        script=script,
        name=job_name(session_id),
        memory_bytes=(memory_bytes + AGENT_MEMORY_BYTES) if memory_bytes else None,
        cpus=max(1, math.ceil(cpus)) if cpus else None,
        time_limit_s=max(60, time_limit_s) if time_limit_s else None,
        output=str(place.folder / "agent.log"),
        partition=partition,
        requeue=False,
    )


@dataclass(frozen=True)
class Placement:
    """A session's job as Slurm sees it now."""

    kind: Literal["pending", "running", "lost"]
    reason: str  # Slurm's word: Resources, Priority, NODE_FAIL, not-responding ...
    message: str
    node: str | None = None


def judge(job_id: str, job: Job | None, nodes: Mapping[str, Node]) -> Placement:
    """What `job` (None: the controller no longer lists it) means for its session."""
    if job is None:
        return Placement(
            "lost", "job-gone", f"Slurm no longer lists job {job_id}: its session is gone"
        )
    if job.finished:
        why = f" ({job.reason})" if job.reason else ""
        return Placement(
            "lost", job.state, f"the Slurm job {job_id} ended {job.state}{why}", _first(job)
        )
    if job.state == "PENDING" or not job.nodes:
        reason = job.reason or "None"
        return Placement(
            "pending", reason, f"waiting for Slurm to place job {job_id} (reason: {reason})"
        )
    for name in job.nodes:
        node = nodes.get(name)
        if node is not None and not node.healthy:
            flags = ", ".join(node.flags) or node.state
            why = f": {node.reason}" if node.reason else ""
            return Placement(
                "lost",
                "node-failed",
                f"node {name} of Slurm job {job_id} is {flags}{why}",
                name,
            )
    return Placement(
        "running", job.state, f"Slurm job {job_id} runs on {job.nodes[0]}", _first(job)
    )


def _first(job: Job) -> str | None:
    return job.nodes[0] if job.nodes else None
