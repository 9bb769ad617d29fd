"""The jail's cgroups nest under the Slurm job step they run in (fake trees, no Slurm needed)."""

import signal
from pathlib import Path

import pytest

from cogbox.jail.cgroups import (
    CgroupCounters,
    CgroupError,
    JailCgroup,
    remove_slurm_job_leftovers,
    slurm_step,
)
from cogbox.jail.exit_reason import Evidence, ExitReason, explain
from cogbox.jail.policy import default_policy

STEP = "/slurm_node1/uid_0/job_7/step_0"
IN_STEP_V1 = f"""\
9:name=systemd:/
8:pids:/
6:freezer:{STEP}
4:memory:{STEP}/task_0
2:cpuacct:{STEP}/task_0
1:cpu:/
0::/
"""
OUTSIDE = "4:memory:/process_api/6b81\n0::/\n"


def fake_v1_in_slurm(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cg"
    for controller in ("memory", "pids", "freezer"):
        (root / controller).mkdir(parents=True)
    # Slurm's own step cgroups, holding its processes (a file stands for cgroup.procs).
    for controller in ("memory", "freezer"):
        step = root / controller / STEP.lstrip("/")
        step.mkdir(parents=True)
        (step / "cgroup.procs").write_text("123\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(IN_STEP_V1)
    return root, self_cgroup


def test_the_step_is_found_from_the_memory_controllers_line() -> None:
    assert slurm_step(IN_STEP_V1, 1) == STEP
    assert slurm_step(OUTSIDE, 1) == ""
    assert slurm_step("4:memory:/slurm/uid_1000/job_12/step_batch/task_0\n", 1) == (
        "/slurm/uid_1000/job_12/step_batch"
    )
    assert slurm_step("4:memory:/docker/ab12/slurm/uid_0/job_3/step_0/task_0\n", 1) == (
        "/docker/ab12/slurm/uid_0/job_3/step_0"
    )
    assert slurm_step("4:memory:/notslurm/uid_0/job_3/step_0\n", 1) == ""


def test_inside_a_slurm_step_runc_gets_a_leaf_under_the_step(tmp_path: Path) -> None:
    root, self_cgroup = fake_v1_in_slurm(tmp_path)
    cgroup = JailCgroup("j1", root=root, self_cgroup=self_cgroup)
    cgroup.create(memory_bytes=64 << 20, pids=16)
    assert cgroup.runc_path == f"{STEP}/cogbox/j1/jail"
    limit = root / "memory" / STEP.lstrip("/") / "cogbox/j1/memory.limit_in_bytes"
    assert limit.read_text() == str(64 << 20)


def test_outside_slurm_the_layout_stays_at_the_root(tmp_path: Path) -> None:
    root, self_cgroup = fake_v1_in_slurm(tmp_path)
    self_cgroup.write_text(OUTSIDE)
    assert JailCgroup("j1", root=root, self_cgroup=self_cgroup).runc_path == "/cogbox/j1/jail"


def test_remove_leaves_no_cogbox_folder_under_the_step_and_keeps_slurms_own(
    tmp_path: Path,
) -> None:
    root, self_cgroup = fake_v1_in_slurm(tmp_path)
    cgroup = JailCgroup("j1", root=root, self_cgroup=self_cgroup)
    cgroup.create(memory_bytes=None, pids=None)
    cgroup.remove()
    assert not list(root.glob("*/**/cogbox"))
    # Slurm's step stays (it holds processes); the step path cogbox made in pids goes.
    assert (root / "memory" / STEP.lstrip("/")).is_dir()
    assert (root / "freezer" / STEP.lstrip("/")).is_dir()
    assert list((root / "pids").iterdir()) == []


def test_inside_a_slurm_step_on_cgroup_v2_the_jail_is_refused_by_name(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n")
    with pytest.raises(CgroupError, match=r"Slurm job step .* cgroup v2"):
        JailCgroup("j1", root=root, self_cgroup=self_cgroup)


def test_a_peak_at_the_slurm_steps_limit_counts_as_a_hit_naming_that_limit(
    tmp_path: Path,
) -> None:
    root, self_cgroup = fake_v1_in_slurm(tmp_path)
    cgroup = JailCgroup("j1", root=root, self_cgroup=self_cgroup)
    cgroup.create(memory_bytes=1 << 30, pids=None)
    step = root / "memory" / STEP.lstrip("/")
    (step / "memory.limit_in_bytes").write_text(str(200 << 20))
    (step / "memory.max_usage_in_bytes").write_text(str((200 << 20) - 12288))
    (step.parent / "memory.limit_in_bytes").write_text(str(200 << 20))
    (step.parent / "memory.max_usage_in_bytes").write_text(str(150 << 20))
    counters = cgroup.counters()
    assert (counters.memory_limit_hits, counters.slurm_memory_limit_bytes) == (1, 200 << 20)


def test_a_peak_well_under_the_slurm_limit_is_no_hit(tmp_path: Path) -> None:
    root, self_cgroup = fake_v1_in_slurm(tmp_path)
    cgroup = JailCgroup("j1", root=root, self_cgroup=self_cgroup)
    cgroup.create(memory_bytes=1 << 30, pids=None)
    step = root / "memory" / STEP.lstrip("/")
    (step / "memory.limit_in_bytes").write_text(str(1000 << 20))
    (step / "memory.max_usage_in_bytes").write_text(str(600 << 20))
    counters = cgroup.counters()
    assert (counters.memory_limit_hits, counters.slurm_memory_limit_bytes) == (0, None)


def test_an_oom_kill_at_the_slurm_limit_is_worded_with_that_limit() -> None:
    counters = CgroupCounters(
        oom_kills=0,
        memory_limit_hits=1,
        pids_limit_hits=0,
        pids_peak=None,
        memory_peak_bytes=None,
        slurm_memory_limit_bytes=200 << 20,
    )
    exit = explain(128 + signal.SIGKILL, default_policy().limits, Evidence(counters))
    assert exit.reason == ExitReason.OOM
    assert exit.message == "killed: out of memory (the Slurm job's memory limit 200 MiB)"


def test_the_epilogs_job_id_must_be_a_number(tmp_path: Path) -> None:
    root, _ = fake_v1_in_slurm(tmp_path)
    with pytest.raises(CgroupError, match="not a Slurm job id"):
        remove_slurm_job_leftovers("7/../../x", root)
