"""scripts/slurm-dev: a real 3-node Slurm cluster on this machine places, limits and loses jobs
the way a real cluster does."""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import NODES, DevCluster, slurm_dev

pytestmark = pytest.mark.slow

HOST_ADDR = "10.77.0.1"  # the bridge's address on this machine, as `up` exports it
NODE_MEMORY = "1000M"  # two of these do not fit one 1500 MB node: one job per node


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.2)


def squeue(cluster: DevCluster, job_id: str, field: str) -> str:
    return cluster.run("squeue", "-h", "-j", job_id, "-o", field).stdout.strip()


def sbatch(cluster: DevCluster, *args: str) -> str:
    proc = cluster.run("sbatch", "--parsable", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def cancel_all(cluster: DevCluster, *job_ids: str) -> None:
    cluster.run("scancel", *job_ids, timeout=30)


def test_up_starts_three_idle_nodes(slurm_cluster: DevCluster) -> None:
    out = slurm_cluster.run("sinfo", "-h", "-N", "-p", "dev", "-o", "%N %t").stdout.split("\n")
    assert sorted(line for line in out if line) == [f"node{i} idle" for i in range(1, NODES + 1)]


def test_up_again_keeps_the_running_cluster_and_prints_the_same_exports(
    slurm_cluster: DevCluster,
) -> None:
    pids = {p.name: p.read_text() for p in (slurm_cluster.state / "run").glob("*.pid")}
    again = slurm_dev("up", str(NODES)).stdout
    assert again == (
        f"export SLURM_CONF={slurm_cluster.conf}\nexport SLURM_DEV_HOST_ADDR={HOST_ADDR}\n"
        "export COGBOX_SLURM_PARTITION=cogbox\n"
    )
    assert {p.name: p.read_text() for p in (slurm_cluster.state / "run").glob("*.pid")} == pids


def test_srun_on_one_node_prints_the_commands_output(slurm_cluster: DevCluster) -> None:
    proc = slurm_cluster.run("srun", "-N1", "sh", "-c", "echo hello from $(hostname)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in {f"hello from {node}" for node in slurm_cluster.nodes}


def test_one_job_per_node_lands_on_three_distinct_nodes(slurm_cluster: DevCluster) -> None:
    jobs = [sbatch(slurm_cluster, f"--mem={NODE_MEMORY}", "--wrap", "sleep 60") for _ in range(3)]
    try:
        wait_until(
            "all running", lambda: all(squeue(slurm_cluster, j, "%T") == "RUNNING" for j in jobs)
        )
        assert sorted(squeue(slurm_cluster, j, "%N") for j in jobs) == list(slurm_cluster.nodes)
    finally:
        cancel_all(slurm_cluster, *jobs)


def test_an_allocation_over_mem_is_killed_out_of_memory(slurm_cluster: DevCluster) -> None:
    proc = slurm_cluster.run(
        "srun", "--mem=100M", "python3", "-c", "b = bytearray(300 << 20); print('allocated')"
    )
    assert proc.returncode != 0 and "allocated" not in proc.stdout
    assert "Out Of Memory" in proc.stderr or "oom-kill" in proc.stderr, proc.stderr


def test_a_job_that_does_not_fit_now_is_pending_on_resources(slurm_cluster: DevCluster) -> None:
    fill = [sbatch(slurm_cluster, f"--mem={NODE_MEMORY}", "--wrap", "sleep 60") for _ in range(3)]
    waiting = sbatch(slurm_cluster, f"--mem={NODE_MEMORY}", "--wrap", "true")
    try:
        wait_until(
            "fill running", lambda: all(squeue(slurm_cluster, j, "%T") == "RUNNING" for j in fill)
        )
        wait_until("reason given", lambda: squeue(slurm_cluster, waiting, "%r") != "None")
        assert squeue(slurm_cluster, waiting, "%T %r") in {"PENDING Resources", "PENDING Priority"}
    finally:
        cancel_all(slurm_cluster, *fill, waiting)


def test_a_job_asking_more_memory_than_any_node_has_is_refused_by_name(
    slurm_cluster: DevCluster,
) -> None:
    # Slurm refuses at submission what no node could ever run (it would pend forever).
    proc = slurm_cluster.run("sbatch", "--mem=4000M", "--wrap", "true")
    assert proc.returncode != 0
    assert "Memory specification can not be satisfied" in proc.stderr


def test_a_job_on_a_node_reaches_a_port_on_the_host_address(slurm_cluster: DevCluster) -> None:
    # What an agent on a node needs: to dial back to a manager on this machine.
    with socket.socket() as server:
        server.bind((HOST_ADDR, 0))
        server.listen(1)
        server.settimeout(30)
        port = server.getsockname()[1]
        dial = (
            f"import socket; c = socket.create_connection(('{HOST_ADDR}', {port}), timeout=10); "
            "c.sendall(socket.gethostname().encode())"
        )
        job = subprocess.Popen(
            ["srun", "-N1", "-w", "node3", "python3", "-c", dial], env=slurm_cluster.env
        )
        connection, (peer, _) = server.accept()
        with connection:
            assert (peer, connection.recv(64)) == ("10.77.0.13", b"node3")
        assert job.wait(timeout=30) == 0


def _slurmd_pid(cluster: DevCluster, node: str) -> int:
    return int((cluster.state / "run" / f"slurmd-{node}.pid").read_text())


def test_a_node_whose_slurmd_dies_is_reported_not_responding(slurm_cluster: DevCluster) -> None:
    os.kill(_slurmd_pid(slurm_cluster, "node2"), signal.SIGKILL)
    try:

        def lost() -> bool:
            state = slurm_cluster.run("sinfo", "-h", "-N", "-n", "node2", "-o", "%t").stdout.strip()
            return state.endswith("*") or state.startswith("down")

        wait_until("node2 reported lost", lost, timeout=40)
        others = slurm_cluster.run(
            "sinfo", "-h", "-N", "-p", "dev", "-n", "node1,node3", "-o", "%t"
        ).stdout
        assert others.split() == ["idle", "idle"]
    finally:
        slurm_dev("up", str(NODES))  # one slurmd short: `up` restarts the cluster whole


def _our_processes(state: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(state).encode() in cmdline and status != "Z":
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_down_leaves_no_process_namespace_link_or_cgroup(slurm_cluster: DevCluster) -> None:
    assert _our_processes(slurm_cluster.state)  # the check can see a running cluster
    slurm_dev("down")
    try:
        assert _our_processes(slurm_cluster.state) == []
        assert not list(Path("/run/netns").glob("cogbox-slurm-*"))
        link = subprocess.run(["ip", "link", "show", "cslurm0"], capture_output=True, check=False)
        assert link.returncode != 0
        assert not list(Path("/sys/fs/cgroup").glob("*/slurm_node*"))
        slurm_dev("down")  # idempotent
    finally:
        slurm_dev("up", str(NODES))
