"""cogbox.cluster.session_job: a session's limits as its job's, and Slurm's view of the job
as the session's placement (pure; no cluster)."""

from pathlib import Path

from cogbox.cluster.session_job import AGENT_MEMORY_BYTES, JobPlace, judge, session_job
from cogbox.cluster.slurm import Job, Node

PLACE = JobPlace(
    Path("/srv/cogbox/slurm/s1"),
    Path("/srv/cogbox/sessions"),
    Path("/srv/cogbox/logs"),
    Path("/srv/cogbox/vfolders"),
    "/opt/cogbox/bin/python",
    "10.0.0.1",
    {"COGBOX_DATA_DIR": "/srv/cogbox data"},
)


def running(*nodes: str, state: str = "RUNNING", reason: str | None = None) -> Job:
    return Job("7", "cogbox-s1", state, reason, nodes, None)


def node(name: str, state: str = "mixed", *flags: str, reason: str | None = None) -> Node:
    return Node(name, state, flags, reason, 2, 1500)


def test_the_sessions_memory_and_cpus_become_the_jobs_with_the_agents_share_added() -> None:
    job = session_job(
        "s1", PLACE, memory_bytes=1 << 30, cpus=1.5, time_limit_s=3600, partition="cogbox"
    )
    assert (job.memory_bytes, job.cpus, job.time_limit_s, job.partition, job.requeue) == (
        (1 << 30) + AGENT_MEMORY_BYTES,
        2,
        3600,
        "cogbox",
        False,
    )


def test_the_job_runs_the_agent_on_tls_in_the_sessions_folder_with_quoted_paths() -> None:
    script = session_job(
        "s1", PLACE, memory_bytes=None, cpus=None, time_limit_s=None, partition=None
    ).script
    assert "--dir /srv/cogbox/slurm/s1" in script
    assert "COGBOX_DATA_DIR='/srv/cogbox data'" in script
    assert '--listen "tcp://$ADDR:0"' in script
    assert 's.connect(("10.0.0.1", 9))' in script


def test_a_pending_job_is_a_pending_session_with_slurms_reason() -> None:
    verdict = judge("7", running(state="PENDING", reason="Resources"), {})
    assert (verdict.kind, verdict.reason) == ("pending", "Resources")


def test_a_job_on_a_healthy_node_is_running_there() -> None:
    verdict = judge("7", running("node2"), {"node2": node("node2")})
    assert (verdict.kind, verdict.node) == ("running", "node2")


def test_a_job_whose_node_stopped_responding_is_lost_naming_the_node() -> None:
    sick = node("node2", "mixed", "NOT_RESPONDING", reason="Not responding")
    verdict = judge("7", running("node2"), {"node2": sick})
    assert (verdict.kind, verdict.reason) == ("lost", "node-failed")
    assert "node2" in verdict.message and "NOT_RESPONDING" in verdict.message


def test_a_job_that_ended_or_is_gone_is_lost_with_the_reason() -> None:
    ended = judge("7", running("node1", state="NODE_FAIL"), {})
    gone = judge("7", None, {})
    assert (ended.kind, ended.reason, gone.kind, gone.reason) == (
        "lost",
        "NODE_FAIL",
        "lost",
        "job-gone",
    )
