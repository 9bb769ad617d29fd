"""A jail run inside a Slurm job step is bound by the job's limits (its cgroups nest under the
step's), and leaves nothing behind that blocks Slurm's own cleanup of the job's cgroups."""

import sys
import time
from pathlib import Path

import pytest

from cogbox.cluster.slurm import JobRequest, SlurmClient
from cogbox.images.store import Image
from tests.cluster.conftest import DevCluster

pytestmark = pytest.mark.slow

COGBOX = str(Path(sys.executable).with_name("cogbox"))
ALLOCATE = "b = bytearray(600 << 20); print('allocated', len(b) >> 20, 'MiB')"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def jail_in_step(cluster: DevCluster, memory: str, image: Image) -> tuple[str, int, str]:
    """srun a step that runs the allocation in the jail; (job id, jail's status, output)."""
    script = (
        f'echo "job=$SLURM_JOB_ID"; {COGBOX} jail run --image {image.name} -- '
        f'python3 -c "{ALLOCATE}"; echo "status=$?"'
    )
    proc = cluster.run("srun", f"--mem={memory}", "sh", "-c", script, timeout=120)
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return fields["job"], int(fields["status"]), proc.stdout + proc.stderr


def job_cgroups(job_id: str) -> list[Path]:
    return list(CGROUP_ROOT.glob(f"*/slurm*/uid_*/job_{job_id}"))


def test_a_jailed_allocation_over_the_jobs_memory_is_killed_naming_slurms_limit(
    slurm_cluster: DevCluster, python_image: Image
) -> None:
    _, status, output = jail_in_step(slurm_cluster, "200M", python_image)
    assert status == 137 and "allocated" not in output, output
    assert "killed: out of memory (the Slurm job's memory limit 200 MiB)" in output


def test_the_same_allocation_runs_in_a_job_with_room_for_it(
    slurm_cluster: DevCluster, python_image: Image
) -> None:
    _, status, output = jail_in_step(slurm_cluster, "1000M", python_image)
    assert status == 0 and "allocated 600 MiB" in output, output


def test_after_the_job_ends_slurms_job_cgroup_is_gone(
    slurm_cluster: DevCluster, python_image: Image
) -> None:
    job_id, _, _ = jail_in_step(slurm_cluster, "200M", python_image)
    deadline = time.monotonic() + 15
    while job_cgroups(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_cgroups(job_id) == []
    assert not list(CGROUP_ROOT.glob("*/slurm*/**/cogbox"))


def test_a_cancelled_job_with_a_running_jail_leaves_no_cgroup_behind(
    slurm_cluster: DevCluster, slurm: SlurmClient, python_image: Image
) -> None:
    # scancel kills the jail's driver before it can clean up; the Epilog (`cogbox jail gc
    # --slurm-job`) removes the jail's cgroups and then the job's, which Slurm could not.
    script = f"#!/bin/sh\n{COGBOX} jail run --image {python_image.name} -- sleep 300\necho done\n"
    job_id = slurm.submit(JobRequest(script=script, name="jail-cancel", memory_bytes=500 << 20))
    deadline = time.monotonic() + 30
    while not list(CGROUP_ROOT.glob(f"memory/slurm*/uid_*/job_{job_id}/step_*/cogbox/*/jail")):
        assert time.monotonic() < deadline, "the jail never started"
        time.sleep(0.2)
    slurm.cancel(job_id)
    deadline = time.monotonic() + 30
    while job_cgroups(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_cgroups(job_id) == []
