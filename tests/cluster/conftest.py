"""A 3-node Slurm dev cluster (scripts/slurm-dev), started once per test session, stopped after.

Like the private engines of tests/images/engines.py: the tests start what they need themselves,
so `scripts/test` (the CI command) needs no daemon running beforehand. CI installs slurm-wlm and
munge (scripts/setup), so there these tests run; elsewhere they skip and say why.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cogbox.cluster.slurm import SlurmClient

REPO = Path(__file__).resolve().parents[2]
SLURM_DEV = REPO / "scripts" / "slurm-dev"
NODES = 3


@dataclass(frozen=True)
class DevCluster:
    conf: Path
    state: Path
    nodes: tuple[str, ...]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # In the state dir: sbatch writes slurm-<id>.out into the folder it is run from.
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.state,
            timeout=timeout,
            check=False,
        )


def require_slurm() -> None:
    if os.geteuid() != 0:
        pytest.skip("the Slurm dev cluster needs root (namespaces, cgroups, munged)")
    for command in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(command) is None:
            pytest.skip(f"{command} is not installed (Debian packages slurm-wlm munge)")


def slurm_dev(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(SLURM_DEV), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"slurm-dev {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[DevCluster]:
    """The dev cluster, up with 3 nodes; one already up is reused and left up after."""
    require_slurm()
    already_up = subprocess.run([str(SLURM_DEV), "status"], capture_output=True, check=False)
    out = slurm_dev("up", str(NODES)).stdout
    conf = Path(out.split("SLURM_CONF=", 1)[1].split()[0])
    cluster = DevCluster(conf, conf.parent.parent, tuple(f"node{i}" for i in range(1, 4)))
    try:
        yield cluster
    finally:
        if already_up.returncode != 0:
            slurm_dev("down")


@pytest.fixture
def slurm(slurm_cluster: DevCluster) -> Iterator[SlurmClient]:
    """A client of the dev cluster; jobs a test leaves behind are cancelled after it."""
    client = SlurmClient(slurm_cluster.conf)
    before = set(client.jobs())
    yield client
    for job_id, job in client.jobs().items():
        if job_id not in before and not job.finished:
            client.cancel(job_id)
