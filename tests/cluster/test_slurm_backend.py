"""`cogbox serve --backend slurm` on the 3-node dev cluster: each session a Slurm job whose
agent runs on the node Slurm picked, reached over TLS with its certificate pinned; through
the native API and the unmodified `backend.ai` client."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.cluster.conftest import NODES, DevCluster, slurm_dev
from tests.e2e.test_backendai_client import backendai, run_client  # noqa: F401 - a fixture
from tests.seed import CNTK_MINUS, CNTK_SQUARED_ERROR, HELLO_WORLD
from tests.service.support import Client, Service, running_service, stdout_of

pytestmark = pytest.mark.slow

HOST_ADDR = "10.77.0.1"  # the bridge's address, as `slurm-dev up` exports it
CGROUP_ROOT = Path("/sys/fs/cgroup")
START_WAIT_S = 15  # a create answers `pending` after this long unplaced


@pytest.fixture(scope="module")
def slurm_service(
    slurm_cluster: DevCluster,
    python_image: Image,
    cntk_image: Image,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    args = ("--backend", "slurm", "--slurm-partition", "cogbox")
    args += ("--slurm-manager-host", HOST_ADDR, "--slurm-start-wait", str(START_WAIT_S))
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    with running_service(tmp_path_factory.mktemp("slurm"), *args, extra_env=env) as service:
        yield service


@pytest.fixture(scope="module")
def keys(slurm_service: Service) -> Client:
    return slurm_service.keypair()


def job_of(cluster: DevCluster, session_id: str) -> tuple[str, str, str]:
    """The session's job as squeue shows it: (state, reason, nodes); empty once it left."""
    out = cluster.run("squeue", "-h", "-n", f"cogbox-{session_id}", "-o", "%i|%T|%r|%N").stdout
    if not out.strip():
        return ("", "", "")
    _, state, reason, nodes = out.strip().splitlines()[0].split("|")
    return state, reason, nodes


def job_id_of(cluster: DevCluster, session_id: str) -> str:
    out = cluster.run("squeue", "-h", "-t", "all", "-n", f"cogbox-{session_id}", "-o", "%i")
    return out.stdout.split()[0]


def cogbox_jobs(cluster: DevCluster) -> set[str]:
    """Every session job the controller lists, ended ones too (kept MinJobAge)."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i %j").stdout
    return {line.split()[0] for line in out.splitlines() if " cogbox-" in f" {line.split()[1]}"}


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.3)


def session(keys: Client, ref: str) -> dict[str, object]:
    return dict(keys.request("GET", f"/v1/sessions/{ref}").json())


# ---- the native API ------------------------------------------------------------------------


def test_a_session_runs_its_code_on_the_node_slurm_picked(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    created = keys.create("python", memory="512m")
    assert created["status"] == "running", created
    state, _, node = job_of(slurm_cluster, created["id"])
    assert (state, node in slurm_cluster.nodes) == ("RUNNING", True)
    assert stdout_of(keys.execute(created["id"], "print(1+1)")) == "2\n"
    job = job_id_of(slurm_cluster, created["id"])
    assert keys.request("DELETE", f"/v1/sessions/{created['id']}").status_code == 204
    wait_until("the job ended", lambda: job_of(slurm_cluster, created["id"])[0] == "", 20)
    # nothing of the jail is left to block Slurm's own removal of the job's cgroups
    wait_until(
        "the job's cgroups removed",
        lambda: not list(CGROUP_ROOT.glob(f"*/slurm*/uid_*/job_{job}")),
        20,
    )


def test_files_and_the_log_of_a_slurm_placed_session_work_while_it_runs_and_after(
    keys: Client,
) -> None:
    created = keys.create("python", memory="512m")
    sid = created["id"]
    put = keys.request("PUT", f"/v1/sessions/{sid}/files/content?path=in.txt", data=b"from host")
    assert put.status_code == 204, put.text
    code = "print(open('in.txt').read()); open('out.txt', 'w').write('from node')"
    assert stdout_of(keys.execute(sid, code)) == "from host\n"
    got = keys.request("GET", f"/v1/sessions/{sid}/files/content?path=out.txt")
    assert got.content == b"from node"
    keys.request("DELETE", f"/v1/sessions/{sid}")  # its log is kept
    log = keys.request("GET", f"/v1/sessions/{sid}/logs")
    assert "from host" in log.text, log.text  # written on the node, read by the manager


def test_a_batch_session_runs_its_command_in_a_slurm_job_and_ends_with_its_result(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    before = cogbox_jobs(slurm_cluster)
    job = keys.create("python", type="batch", startup_command="echo batch-ran", memory="512m")
    wait_until(
        "the job session ended",
        lambda: session(keys, job["id"])["status"] == "terminated",
        timeout=60,
    )
    assert session(keys, job["id"])["result"] == "SUCCESS"
    assert "batch-ran" in keys.request("GET", f"/v1/sessions/{job['id']}/logs").text
    assert len(cogbox_jobs(slurm_cluster) - before) == 1
    wait_until("its Slurm job ended", lambda: job_of(slurm_cluster, job["id"])[0] == "", 20)


def test_the_jail_nests_under_its_job_and_an_allocation_over_its_memory_is_killed(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    created = keys.create("python", memory="512m")
    job = job_id_of(slurm_cluster, created["id"])
    jails = list(CGROUP_ROOT.glob(f"memory/slurm*/uid_*/job_{job}/step_*/cogbox/*/jail"))
    assert len(jails) == 1, "the session's jail is not under its Slurm job's cgroup"
    result = keys.execute(created["id"], "b = bytearray(900 << 20); print('allocated')")
    assert "allocated" not in stdout_of(result)
    died = [e for e in result["events"] if e["kind"] == "kernel_died"]
    assert died and "out of memory" in died[0]["message"], result
    wait_until(
        "the session reported dead", lambda: session(keys, created["id"])["status"] == "dead"
    )
    assert session(keys, created["id"])["status_info"] == "oom"
    keys.request("DELETE", f"/v1/sessions/{created['id']}")


def test_a_session_larger_than_any_node_is_pending_with_slurms_reason_then_cancelled(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    started = time.monotonic()
    response = keys.request("POST", "/v1/sessions", json={"image": "python", "memory": "2g"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["status"], created["status_info"]) == ("pending", "ReqNodeNotAvail")
    assert time.monotonic() - started < START_WAIT_S + 10  # answered, not hung
    state, reason, _ = job_of(slurm_cluster, created["id"])
    assert (state, reason.split(",")[0]) == ("PENDING", "ReqNodeNotAvail")
    assert keys.request("DELETE", f"/v1/sessions/{created['id']}").status_code == 204
    wait_until("the job cancelled", lambda: job_of(slurm_cluster, created["id"])[0] == "", 10)
    time.sleep(2)  # the start it cancelled must not mark the session an error afterwards
    assert session(keys, created["id"])["status"] == "terminated"


def test_a_session_queued_behind_full_nodes_is_pending_on_resources_then_starts(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    # a 1 GiB session's job (1 GiB + the agent's 256 MiB) fills a 1500 MB node
    held = [keys.create("python", memory="1g") for _ in slurm_cluster.nodes]
    try:
        queued = keys.create("python", memory="1g")
        assert (queued["status"], queued["status_info"]) == ("pending", "Resources"), queued
        keys.request("DELETE", f"/v1/sessions/{held.pop()['id']}")
        wait_until(
            "the queued session running",
            lambda: session(keys, queued["id"])["status"] == "running",
            timeout=30,
        )
        assert stdout_of(keys.execute(queued["id"], "print('placed')")) == "placed\n"
        held.append(queued)
    finally:
        for made in held:
            keys.request("DELETE", f"/v1/sessions/{made['id']}")


def test_a_killed_manager_re_attaches_to_its_sessions_jobs_at_its_next_start(
    slurm_cluster: DevCluster, python_image: Image, tmp_path: Path
) -> None:
    """The session's agent runs on in its job while no manager does: the next manager dials
    it again, and the session keeps its variable; destroying it then cancels the job."""
    args = ("--backend", "slurm", "--slurm-partition", "cogbox", "--slurm-manager-host", HOST_ADDR)
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    with running_service(tmp_path, *args, extra_env=env) as service:
        client = service.keypair()
        created = client.create("python", memory="512m")
        client.execute(created["id"], "kept = 41")
        assert service.process is not None
        service.process.kill()  # no clean close: its session's job runs on
        service.process.wait()
        assert job_of(slurm_cluster, created["id"])[0] == "RUNNING"
        service.start(*args)
        assert session(client, created["id"])["status"] == "running"
        assert stdout_of(client.execute(created["id"], "print(kept + 1)")) == "42\n"
        client.request("DELETE", f"/v1/sessions/{created['id']}")
        wait_until("the job cancelled", lambda: job_of(slurm_cluster, created["id"])[0] == "", 20)


# ---- the backend.ai client -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (HELLO_WORLD, "hello world"),
        (CNTK_SQUARED_ERROR, "[ 29.]"),
        (CNTK_MINUS, "[-3. -3. -3.]"),
    ],
    ids=["hello-world", "cntk-squared-error", "cntk-minus"],
)
def test_backendai_run_prints_the_seed_output_from_a_slurm_placed_session(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
    snippet: str,
    expected: str,
) -> None:
    before = cogbox_jobs(slurm_cluster)
    # cntk's own policy asks 4 GiB, more than a dev node has (1500 MB): it would queue
    result = run_client(backendai, keys, "run", "--rm", "-r", "mem=1g", "cntk", "-c", snippet)
    assert (result.returncode, expected in result.stdout) == (0, True), result.stderr
    assert len(cogbox_jobs(slurm_cluster) - before) == 1  # its session was a Slurm job


def test_three_one_gib_sessions_spread_over_at_least_two_nodes(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
) -> None:
    names = [f"spread-{i}" for i in range(3)]
    try:
        for name in names:
            made = run_client(
                backendai, keys, "session", "create", "-t", name, "-r", "mem=1g", "python"
            )
            assert made.returncode == 0, made.stdout + made.stderr
        ids = [str(session(keys, name)["id"]) for name in names]
        placed = [job_of(slurm_cluster, sid) for sid in ids]
        assert [state for state, _, _ in placed] == ["RUNNING"] * 3, placed
        assert len({node for _, _, node in placed}) >= 2, placed
    finally:
        for name in names:
            run_client(backendai, keys, "session", "destroy", name)


def test_backendai_shows_a_session_larger_than_any_node_pending_then_destroys_it(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
) -> None:
    made = run_client(
        backendai, keys, "session", "create", "-t", "too-big", "-r", "mem=2g", "python"
    )
    assert made.returncode == 0 and "enqueued" in made.stderr, made.stdout + made.stderr
    sid = str(session(keys, "too-big")["id"])
    info = run_client(backendai, keys, "session", "info", sid)  # it wants the id
    assert "PENDING" in info.stdout and "ReqNodeNotAvail" in info.stdout, info.stdout
    assert job_of(slurm_cluster, sid)[0] == "PENDING"
    gone = run_client(backendai, keys, "session", "destroy", "too-big")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    wait_until("the job cancelled", lambda: job_of(slurm_cluster, sid)[0] == "", 10)


def test_backendai_session_on_slurm_writes_a_storage_folder_that_downloads_after(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
    tmp_path: Path,
) -> None:
    """The folder crosses to the node's agent by id; the agent binds it because it is
    mounted on its node (the dev cluster's nodes are this machine: docs/slurm.md)."""

    def client(*args: str) -> "subprocess.CompletedProcess[str]":
        return run_client(backendai, keys, *args, cwd=tmp_path)

    made = client("vfolder", "create", "slurmdata", "-q", "16m")
    assert made.returncode == 0, made.stdout + made.stderr
    (tmp_path / "in.txt").write_text("from the host\n")
    assert client("vfolder", "upload", "slurmdata", "in.txt").returncode == 0
    code = (
        "d = '/home/work/slurmdata/'\n"
        "open(d + 'out.txt', 'w').write(open(d + 'in.txt').read().upper())\nprint('wrote')"
    )
    before = cogbox_jobs(slurm_cluster)
    ran = client("run", "--rm", "-r", "mem=512m", "-v", "slurmdata", "python", "-c", code)
    assert "wrote" in ran.stdout, ran.stdout + ran.stderr
    assert len(cogbox_jobs(slurm_cluster) - before) == 1  # it ran in a Slurm job
    (tmp_path / "in.txt").unlink()
    got = client("vfolder", "download", "slurmdata", "out.txt")
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "out.txt").read_text() == "FROM THE HOST\n"


def test_backendai_sees_an_allocation_over_the_sessions_memory_killed_with_the_reason(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
) -> None:
    code = "b = bytearray(900 << 20); b[::4096] = b'x' * (len(b) // 4096); print('allocated')"
    ran = run_client(
        backendai, keys, "run", "--name", "oom-slurm", "-r", "mem=512m", "python", "-c", code
    )
    try:
        said = ran.stdout + ran.stderr
        assert "allocated" not in ran.stdout and "out of memory" in said, said
        sid = str(session(keys, "oom-slurm")["id"])
        info = run_client(backendai, keys, "session", "info", sid)
        assert "ERROR" in info.stdout and "dead (oom)" in info.stdout, info.stdout
    finally:
        run_client(backendai, keys, "session", "destroy", "oom-slurm")


# ---- losing a node (last: it restarts the cluster) ----------------------------------------


def test_a_session_whose_nodes_slurmd_is_killed_is_reported_lost(
    slurm_cluster: DevCluster, keys: Client
) -> None:
    created = keys.create("python", memory="512m")
    _, _, node = job_of(slurm_cluster, created["id"])
    slurmd = int((slurm_cluster.state / "run" / f"slurmd-{node}.pid").read_text())
    os.kill(slurmd, signal.SIGKILL)
    try:
        wait_until(
            "the session reported lost",
            lambda: session(keys, created["id"])["status"] == "lost",
            timeout=60,
        )
        lost = session(keys, created["id"])
        assert lost["status_info"] == "node-failed", lost
        events = keys.request("GET", f"/v1/sessions/{created['id']}/events").json()["events"]
        assert any(node in e["message"] and "NOT_RESPONDING" in e["message"] for e in events)
    finally:
        keys.request("DELETE", f"/v1/sessions/{created['id']}")
        slurm_dev("up", str(NODES))  # one slurmd short: `up` restarts the cluster whole


def test_backendai_sees_the_session_of_a_node_whose_slurmd_is_killed_lost(
    slurm_cluster: DevCluster,
    backendai: Path,  # noqa: F811
    keys: Client,
) -> None:
    made = run_client(
        backendai, keys, "session", "create", "-t", "doomed", "-r", "mem=512m", "python"
    )
    assert made.returncode == 0, made.stdout + made.stderr
    sid = str(session(keys, "doomed")["id"])
    _, _, node = job_of(slurm_cluster, sid)
    slurmd = int((slurm_cluster.state / "run" / f"slurmd-{node}.pid").read_text())
    os.kill(slurmd, signal.SIGKILL)
    try:
        wait_until(
            "backend.ai shows the session lost",
            lambda: (
                "lost (node-failed)" in run_client(backendai, keys, "session", "info", sid).stdout
            ),
            timeout=60,
        )
        info = run_client(backendai, keys, "session", "info", sid).stdout
        assert "ERROR" in info, info
    finally:
        run_client(backendai, keys, "session", "destroy", "doomed")
        slurm_dev("up", str(NODES))  # one slurmd short: `up` restarts the cluster whole
