"""Launcher parts that need no jail: cgroup layouts on fake trees, exit reasons, copy-back."""

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from cogbox.jail.cgroups import CgroupCounters, CgroupError, JailCgroup, detect_version
from cogbox.jail.exit_reason import Evidence, ExitReason, explain
from cogbox.jail.policy import default_policy
from cogbox.jail.workdir import CopyBudgetExceeded, sync_tree

LIMITS = default_policy().limits


def fake_v2(root: Path) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def fake_v1(root: Path) -> Path:
    for controller in ("memory", "pids", "cpu,cpuacct"):
        (root / controller).mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    return root


def test_cgroup_v2_is_detected_by_its_controllers_file(tmp_path: Path) -> None:
    assert detect_version(fake_v2(tmp_path / "cg")) == 2


def test_cgroup_v1_is_detected_by_its_controller_directories(tmp_path: Path) -> None:
    assert detect_version(fake_v1(tmp_path / "cg")) == 1


def test_no_cgroup_hierarchy_is_an_error_naming_the_root(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=str(tmp_path)):
        detect_version(tmp_path)


def test_v2_limits_go_on_the_launchers_parent_cgroup(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=64 << 20, pids=16)
    own = root / "cogbox" / "j1"
    assert (own / "memory.max").read_text() == str(64 << 20)
    assert (own / "pids.max").read_text() == "16"
    assert cgroup.runc_path == "/cogbox/j1/jail"


def test_v2_counters_come_from_memory_and_pids_events(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=1 << 20, pids=4)
    own = root / "cogbox" / "j1"
    (own / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (own / "pids.events").write_text("max 3\n")
    (own / "pids.peak").write_text("4\n")
    assert cgroup.counters() == CgroupCounters(
        oom_kills=1,
        memory_limit_hits=12,
        pids_limit_hits=3,
        pids_peak=4,
        memory_peak_bytes=None,
    )


def test_v1_limits_go_on_memory_and_pids_parents(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=64 << 20, pids=16)
    assert (root / "memory/cogbox/j1/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (root / "pids/cogbox/j1/pids.max").read_text() == "16"


def test_v1_peak_at_the_limit_counts_as_a_memory_limit_hit(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=1 << 20, pids=4)
    memory = root / "memory/cogbox/j1"
    (memory / "memory.max_usage_in_bytes").write_text(str(1 << 20))
    (memory / "memory.failcnt").write_text("0\n")
    assert cgroup.counters().memory_limit_hits == 1


def forget_files(folder: Path) -> None:
    """What cgroupfs does at rmdir: a plain folder on a fake tree must lose its files first."""
    for found in list(folder.rglob("*")):
        if found.is_file():
            found.unlink()


def test_v1_remove_deletes_the_jail_in_every_hierarchy(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=None, pids=None)
    (root / "cpu,cpuacct/cogbox/j1/jail").mkdir(parents=True)  # as runc would leave it
    forget_files(root / "cpu,cpuacct/cogbox/j1")
    cgroup.remove()
    assert sorted(p.name for p in root.glob("*/cogbox/*") if p.is_dir()) == []


@pytest.mark.parametrize(
    ("fake", "weights", "file", "one", "lowest"),
    [
        (fake_v1, "cpu,cpuacct/cogbox", "cpu.shares", 1024, 2),
        (fake_v2, "cogbox", "cpu.weight", 100, 1),
    ],
)
def test_each_jail_weighs_its_cpus_and_all_jails_weigh_their_sum(
    tmp_path: Path, fake: Callable[[Path], Path], weights: str, file: str, one: int, lowest: int
) -> None:
    # One shared folder of the default weight would make every jail together count as a
    # single process against the service's own.
    root = fake(tmp_path / "cg")
    shared = root / weights
    jails = [JailCgroup(name, root=root) for name in ("j1", "j2", "j3")]
    for jail, cpus in zip(jails, (1.0, 2.0, None), strict=True):
        jail.create(memory_bytes=None, pids=None, cpus=cpus)
    assert (shared / "j2" / file).read_text() == str(2 * one)
    assert (shared / file).read_text() == str(4 * one)
    jails[2].weigh(0)  # waits idle in a pool: the lowest weight, which adds about nothing
    assert (shared / "j3" / file).read_text() == str(lowest)
    assert (shared / file).read_text() == str(3 * one + lowest)
    forget_files(shared / "j2")
    jails[1].remove()
    assert (shared / file).read_text() == str(one + lowest)
    for jail in (jails[0], jails[2]):
        forget_files(shared / jail.jail_id)
        jail.remove()
    assert (shared / file).read_text() == str(one)  # no jails: back to the default


def test_weighing_a_removed_jail_is_an_error_and_makes_no_folder(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    cgroup = JailCgroup("j1", root=root)
    cgroup.create(memory_bytes=None, pids=None)
    forget_files(root / "cpu,cpuacct/cogbox/j1")
    cgroup.remove()
    with pytest.raises(CgroupError, match="gone"):
        cgroup.weigh(1.0)
    assert not (root / "cpu,cpuacct/cogbox/j1").exists()


def test_the_shared_weight_stops_at_the_kernels_maximum(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg")
    for number in range(3):
        JailCgroup(f"j{number}", root=root).create(memory_bytes=None, pids=None, cpus=40)
    assert (root / "cogbox" / "cpu.weight").read_text() == "10000"
    assert (root / "cogbox" / "j0" / "cpu.weight").read_text() == "4000"


def counters(**values: int) -> CgroupCounters:
    base = dict(oom_kills=0, memory_limit_hits=0, pids_limit_hits=0)
    base.update(values)
    return CgroupCounters(**base, pids_peak=None, memory_peak_bytes=None)


def test_sigkill_after_hitting_the_memory_limit_is_oom() -> None:
    exit = explain(128 + signal.SIGKILL, LIMITS, Evidence(counters(memory_limit_hits=3)))
    assert exit.reason == ExitReason.OOM and "memory limit 2048 MiB" in exit.message


def test_watchdog_kill_is_wall_time_even_near_the_memory_limit() -> None:
    evidence = Evidence(counters(memory_limit_hits=3), wall_time_expired=5.0)
    assert explain(137, LIMITS, evidence).message == "killed: wall time limit reached (5 s)"


def test_refused_fork_with_a_failed_exit_is_pids_limit() -> None:
    exit = explain(1, LIMITS, Evidence(counters(pids_limit_hits=1)))
    assert exit.reason == ExitReason.PIDS_LIMIT and f"pids limit {LIMITS.pids}" in exit.message


def test_successful_exit_is_exited_whatever_the_counters_say() -> None:
    assert explain(0, LIMITS, Evidence(counters(pids_limit_hits=9))).reason == ExitReason.EXITED


def test_sigxfsz_is_file_size() -> None:
    assert explain(128 + signal.SIGXFSZ, LIMITS, Evidence()).reason == ExitReason.FILE_SIZE


def test_other_signals_are_named() -> None:
    assert explain(128 + signal.SIGUSR1, LIMITS, Evidence()).message == (
        "killed by signal 10 (SIGUSR1)"
    )


def test_a_segfault_is_a_crash_named_in_words() -> None:
    ended = explain(128 + signal.SIGSEGV, LIMITS, Evidence())
    assert (ended.reason, ended.message, ended.limit_hit) == (
        ExitReason.CRASHED,
        "crashed: segmentation fault (signal 11, SIGSEGV)",
        False,
    )


def test_sigsys_is_the_syscall_filter() -> None:
    ended = explain(128 + signal.SIGSYS, LIMITS, Evidence())
    assert ended.reason == ExitReason.SYSCALL_BLOCKED and ended.limit_hit
    assert "syscall filter" in ended.message


def test_sync_back_copies_changes_and_never_follows_links(tmp_path: Path) -> None:
    source, target, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for folder in (source, target, outside):
        folder.mkdir()
    (source / "sub").mkdir()
    (source / "sub" / "new.txt").write_text("new")
    (source / "escape").symlink_to(outside)
    (target / "stale.txt").write_text("old")
    (target / "sub").symlink_to(outside)  # a link planted where a directory belongs
    sync_tree(source, target)
    assert (target / "sub" / "new.txt").read_text() == "new"
    assert not (target / "sub").is_symlink() and os.listdir(outside) == []
    assert os.readlink(target / "escape") == str(outside)
    assert not (target / "stale.txt").exists()


def test_sync_back_keeps_the_holes_of_sparse_files(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    with open(source / "sparse", "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(8 << 20)
        handle.write(b"data")
    sync_tree(source, target)
    copied = target / "sparse"
    with open(copied, "rb") as handle:
        handle.seek(8 << 20)
        assert handle.read(4) == b"data"
    assert (copied.stat().st_size, copied.stat().st_blocks * 512 <= 1 << 20) == (64 << 20, True)


def test_sync_back_stops_at_the_bytes_the_quota_filesystem_held(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    (source / "big").write_bytes(b"x" * (1 << 20))
    for index in range(3):  # hard links: one file on the quota filesystem, three on the host
        os.link(source / "big", source / f"link-{index}")
    with pytest.raises(CopyBudgetExceeded, match="more than the 2097152 bytes"):
        sync_tree(source, target, max_bytes=2 << 20)
