"""cogbox.cluster.slurm against the real dev cluster: submit, state, pending reason, cancel,
node health, typed errors and timeouts."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cogbox.cluster.slurm import (
    Job,
    JobNotFound,
    JobRejected,
    JobRequest,
    SlurmClient,
    SlurmUnavailable,
    expand_hostlist,
)
from tests.cluster.conftest import DevCluster

MIB = 1 << 20


def wait_for(
    client: SlurmClient, job_id: str, done: Callable[[Job], bool], timeout: float = 30
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} ({job.reason}) after {timeout} s")
        time.sleep(0.2)


def request(script: str, **limits: object) -> JobRequest:
    return JobRequest(script=f"#!/bin/sh\n{script}\n", name="cogbox-test", **limits)  # type: ignore[arg-type]


def test_hostlists_expand_to_node_names() -> None:
    assert expand_hostlist("node[1-3,5],gpu07,n[08-10]") == [
        "node1",
        "node2",
        "node3",
        "node5",
        "gpu07",
        "n08",
        "n09",
        "n10",
    ]


@pytest.mark.slow
def test_a_submitted_job_runs_on_a_node_with_its_output_and_exit_code(
    slurm: SlurmClient, slurm_cluster: DevCluster, tmp_path: Path
) -> None:
    output = tmp_path / "out-%j.txt"
    job_id = slurm.submit(
        request(
            "hostname; exit 3", memory_bytes=100 * MIB, cpus=1, time_limit_s=120, output=str(output)
        )
    )
    job = wait_for(slurm, job_id, lambda j: j.finished)
    assert (job.state, job.exit_code, len(job.nodes)) == ("FAILED", 3, 1)
    assert job.nodes[0] in slurm_cluster.nodes
    assert (tmp_path / f"out-{job_id}.txt").read_text().strip() == job.nodes[0]


@pytest.mark.slow
def test_a_job_that_does_not_fit_now_is_pending_with_slurms_reason_then_cancelled(
    slurm: SlurmClient,
) -> None:
    fill = [slurm.submit(request("sleep 60", memory_bytes=1000 * MIB)) for _ in range(3)]
    for job_id in fill:
        wait_for(slurm, job_id, lambda j: j.state == "RUNNING")
    waiting = slurm.submit(request("true", memory_bytes=1000 * MIB))
    job = wait_for(slurm, waiting, lambda j: j.reason is not None)
    assert (job.state, job.reason, job.nodes) == ("PENDING", "Resources", ())
    slurm.cancel(waiting)
    assert wait_for(slurm, waiting, lambda j: j.finished).state == "CANCELLED"


@pytest.mark.slow
def test_a_job_over_its_memory_ends_out_of_memory(slurm: SlurmClient) -> None:
    script = "python3 -c 'b = bytearray(300 << 20)'"
    job_id = slurm.submit(request(script, memory_bytes=100 * MIB))
    job = wait_for(slurm, job_id, lambda j: j.finished)
    assert (job.state, job.reason) == ("OUT_OF_MEMORY", "OutOfMemory")


@pytest.mark.slow
def test_more_memory_than_any_node_has_is_rejected_naming_slurms_reason(slurm: SlurmClient) -> None:
    with pytest.raises(JobRejected, match="Memory specification can not be satisfied"):
        slurm.submit(request("true", memory_bytes=64 << 30))


def test_a_bad_job_name_is_rejected_before_slurm_is_asked() -> None:
    with pytest.raises(JobRejected, match="job name"):
        SlurmClient(Path("/nonexistent/slurm.conf")).submit(
            JobRequest(script="#!/bin/sh\n", name="a b; rm")
        )


@pytest.mark.slow
def test_an_unknown_job_is_job_not_found(slurm: SlurmClient) -> None:
    with pytest.raises(JobNotFound):
        slurm.job("999999")


@pytest.mark.slow
def test_every_node_is_healthy_with_its_declared_size(slurm: SlurmClient) -> None:
    nodes = slurm.nodes()
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert all(n.healthy and n.cpus == 2 and n.memory_mb == 1500 for n in nodes.values())


@pytest.mark.slow
def test_a_dead_controller_is_slurm_unavailable_within_the_timeout(
    slurm_cluster: DevCluster, tmp_path: Path
) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        slurm_cluster.conf.read_text().replace("SlurmctldPort=6817", "SlurmctldPort=6899")
    )
    (tmp_path / "cgroup.conf").write_text((slurm_cluster.conf.parent / "cgroup.conf").read_text())
    client = SlurmClient(conf, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(SlurmUnavailable):
        client.cancel("1")
    assert time.monotonic() - started < 6
