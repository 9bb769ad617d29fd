"""The OCI runtime spec: a non-root, capability-less, read-only jail that runc accepts."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.plan import JAIL_INIT
from cogbox.jail.gpu import DRIVER_DIR, Device, NvidiaHost
from cogbox.jail.init import HOST_INIT, INIT_ARGS
from cogbox.jail.oci import Bind, jail_env, render_oci_spec
from cogbox.jail.policy import Policy, default_policy, parse_policy

WORK = Bind(Path("/srv/sessions/s1"), "/home/work", readonly=False)


def render(policy: Policy | None = None, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "rootfs": Path("/var/lib/cogbox/images/python/rootfs"),
        "args": ["/usr/bin/python3", "-m", "ipykernel"],
        "env": {"PATH": "/usr/bin:/bin", "HOME": "/home/work"},
        "binds": [WORK],
    }
    arguments.update(overrides)
    return render_oci_spec(policy or default_policy(), **arguments)


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = spec["mounts"]
    (mount,) = [m for m in mounts if m["destination"] == destination]
    return mount


def rlimits(spec: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}


# ---------------------------------------------------------------- the process


def test_runs_as_non_root_uid_1000() -> None:
    assert render()["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": []}


def test_refuses_to_run_as_root() -> None:
    with pytest.raises(ValueError, match="never runs code as root"):
        render(uid=0)


def test_all_capabilities_are_dropped() -> None:
    assert all(caps == [] for caps in render()["process"]["capabilities"].values())


def test_no_new_privileges() -> None:
    assert render()["process"]["noNewPrivileges"] is True


def test_never_sets_rlimit_as_or_nproc() -> None:
    assert not {"RLIMIT_AS", "RLIMIT_NPROC"} & set(rlimits(render()))


def test_rlimits_follow_the_policy_limits() -> None:
    policy = parse_policy("limits: {nofile: 512, file_size: 1m, cpu_time_seconds: 60}")
    assert rlimits(render(policy)) == {
        "RLIMIT_NOFILE": (512, 512),
        "RLIMIT_FSIZE": (1 << 20, 1 << 20),
        "RLIMIT_CPU": (60, 61),  # SIGXCPU first, SIGKILL after a grace period
        "RLIMIT_CORE": (0, 0),
    }


def test_env_is_exactly_what_the_launcher_passed() -> None:
    assert render(env={"A": "1", "B": "x=y"})["process"]["env"] == ["A=1", "B=x=y"]


# ---------------------------------------------------------------- jail_env


def test_jail_env_keeps_only_preserved_keys_and_extra_envs() -> None:
    policy = parse_policy("preserved_env_keys: [PATH, LANG]\nextra_envs: {KERAS_BACKEND: cntk}")
    env = jail_env(
        policy,
        image_env={"PATH": "/usr/bin", "SECRET_IMAGE_VAR": "x"},
        requested={"LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "leak"},
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "KERAS_BACKEND": "cntk"}


def test_jail_env_prefers_requested_over_image_and_policy_over_both() -> None:
    policy = parse_policy("preserved_env_keys: [LANG, TERM]\nextra_envs: {TERM: dumb}")
    env = jail_env(policy, {"LANG": "C", "TERM": "xterm"}, {"LANG": "ko_KR.UTF-8", "TERM": "vt100"})
    assert env == {"LANG": "ko_KR.UTF-8", "TERM": "dumb"}


# ---------------------------------------------------------------- filesystem


def test_root_filesystem_is_read_only() -> None:
    assert render()["root"] == {"path": "/var/lib/cogbox/images/python/rootfs", "readonly": True}


def test_masks_proc_and_sys_paths_like_runc_and_docker() -> None:
    masked = set(render()["linux"]["maskedPaths"])
    assert {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"} <= masked
    assert {"/sys/firmware", "/proc/scsi", "/proc/acpi"} <= masked


def test_kernel_tunables_in_proc_are_read_only() -> None:
    assert {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} <= set(
        render()["linux"]["readonlyPaths"]
    )


def test_sys_is_mounted_read_only() -> None:
    assert "ro" in mount_at(render(), "/sys")["options"]


def test_tmp_is_a_tmpfs_sized_by_the_policy() -> None:
    mount = mount_at(render(parse_policy("limits: {tmp_size: 256m}")), "/tmp")
    assert (mount["type"], f"size={256 << 20}" in mount["options"]) == ("tmpfs", True)


def test_workdir_is_a_writable_bind_of_the_host_directory() -> None:
    mount = mount_at(render(), "/home/work")
    assert (mount["source"], "rw" in mount["options"]) == ("/srv/sessions/s1", True)


def test_a_workdir_bind_is_required() -> None:
    with pytest.raises(ValueError, match="/home/work"):
        render(binds=[])


def test_bind_over_a_kernel_filesystem_is_refused() -> None:
    with pytest.raises(ValueError, match="would replace a jail mount"):
        render(binds=[WORK, Bind(Path("/"), "/proc/sys")])


def test_writable_mounts_are_noexec_when_the_policy_denies_exec_there() -> None:
    spec = render(parse_policy("whitelist_paths: {OP_EXEC: ['/tmp/*']}"))
    assert "noexec" in mount_at(spec, "/home/work")["options"]
    assert "noexec" not in mount_at(spec, "/tmp")["options"]


def test_every_writable_mount_is_nosuid_and_nodev() -> None:
    spec = render()
    for destination in ("/home/work", "/tmp", "/dev/shm"):
        assert {"nosuid", "nodev"} <= set(mount_at(spec, destination)["options"])


def test_policy_readonly_binds_are_mounted_read_only() -> None:
    policy = parse_policy("mounts: {readonly_binds: [{source: /srv/data, destination: /data}]}")
    assert mount_at(render(policy), "/data")["options"][-1] == "ro"


# ---------------------------------------------------------------- namespaces and cgroups


def test_network_none_gets_its_own_network_namespace() -> None:
    types = {ns["type"] for ns in render()["linux"]["namespaces"]}
    assert types == {"pid", "mount", "ipc", "uts", "cgroup", "network"}


def test_network_host_shares_the_host_network() -> None:
    namespaces = render(parse_policy("network: host"))["linux"]["namespaces"]
    assert "network" not in {ns["type"] for ns in namespaces}


def test_memory_limit_allows_no_swap() -> None:
    memory = render(parse_policy("limits: {memory: 4g}"))["linux"]["resources"]["memory"]
    assert memory == {"limit": 4 << 30, "swap": 4 << 30}


def test_pids_limit_comes_from_max_child_procs() -> None:
    assert render(parse_policy("max_child_procs: 32"))["linux"]["resources"]["pids"] == {
        "limit": 32
    }


def test_cpu_quota_and_weight_come_from_cpus() -> None:
    cpu = render(parse_policy("limits: {cpus: 1.5}"))["linux"]["resources"]["cpu"]
    assert cpu == {"quota": 150_000, "period": 100_000, "shares": 1536}


def test_seccomp_is_part_of_the_spec() -> None:
    assert render()["linux"]["seccomp"]["architectures"] == ["SCMP_ARCH_X86_64"]


def test_cgroups_path_is_passed_through() -> None:
    assert render(cgroups_path="cogbox/s1")["linux"]["cgroupsPath"] == "cogbox/s1"


def test_spec_is_oci_1_0_2_and_json_serialisable() -> None:
    assert json.loads(json.dumps(render()))["ociVersion"] == "1.0.2"


# ---------------------------------------------------------------- runc accepts it

CHECK = """\
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
libc.syscall(435, 0, 0); print("clone3", ctypes.get_errno())
libc.syscall(101, 0, 0, 0, 0); print("ptrace", ctypes.get_errno())
print("uid", os.getuid())
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, runc and /usr/bin/python3",
)
def test_runc_runs_the_rendered_spec(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for directory in ("usr", "tmp", "home/work"):
        (rootfs / directory).mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    for link in ("bin", "lib", "lib64", "sbin"):
        (rootfs / link).symlink_to(f"usr/{link}")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 1000, 1000)
    spec = render_oci_spec(
        default_policy(),
        rootfs=rootfs,
        args=["/usr/bin/python3", "-c", CHECK],
        env={"PATH": "/usr/bin"},
        binds=[Bind(work, "/home/work", readonly=False), Bind(Path("/usr"), "/usr")],
    )
    (tmp_path / "config.json").write_text(json.dumps(spec))
    name = f"cogbox-test-{uuid.uuid4().hex[:12]}"
    try:
        result = subprocess.run(
            ["runc", "run", "--bundle", str(tmp_path), name],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, timeout=30)
    assert (result.returncode, result.stdout.split()) == (
        0,
        ["thread", "clone3", "38", "ptrace", "1", "uid", "1000"],
    ), result.stderr


# ---------------------------------------------------------------- what the launcher adds


def test_init_runs_the_command_and_is_bound_executable_from_the_host() -> None:
    spec = render(parse_policy("whitelist_paths: {OP_EXEC: ['/home/work/*']}"), init=True)
    assert spec["process"]["args"][: len(INIT_ARGS) + 1] == [JAIL_INIT, *INIT_ARGS]
    init = mount_at(spec, JAIL_INIT)
    assert (init["source"], "noexec" in init["options"]) == (str(HOST_INIT), False)


def test_no_init_when_the_policy_denies_forks() -> None:
    spec = render(parse_policy("fork_allowance: 0"), init=True)
    assert spec["process"]["args"] == ["/usr/bin/python3", "-m", "ipykernel"]


def test_limits_on_the_parent_cgroup_leave_memory_and_pids_out_of_the_config() -> None:
    resources = render(limits_on_parent_cgroup=True)["linux"]["resources"]
    assert ("memory" in resources, "pids" in resources) == (False, False)


def test_gpus_are_given_to_the_config_with_an_executable_driver_folder() -> None:
    host = NvidiaHost(devices=(Device("/dev/nvidia0", 195, 0),), driver_version="1", libraries=())
    driver = Bind(Path("/srv/driver"), DRIVER_DIR, readonly=True, always_exec=True)
    spec = render(
        parse_policy("gpu: true\nwhitelist_paths: {OP_EXEC: ['/home/work/*']}"),
        binds=[WORK, driver],
        gpus=host,
    )
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/nvidia0"]
    assert "noexec" not in mount_at(spec, DRIVER_DIR)["options"]


def test_gpus_without_the_driver_folder_are_refused() -> None:
    host = NvidiaHost(devices=(), driver_version="1", libraries=())
    with pytest.raises(ValueError, match=DRIVER_DIR):
        render(parse_policy("gpu: true"), gpus=host)
