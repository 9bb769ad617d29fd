"""Specification of the jail launcher: real images run through runc, with limits enforced."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from cogbox.config import data_dir
from cogbox.images.plan import JAIL_INIT
from cogbox.images.store import Image
from cogbox.jail.cgroups import detect_version
from cogbox.jail.launcher import (
    PIPE,
    ExitReason,
    Jail,
    JailError,
    JailResult,
    JailSpec,
    run_jailed,
)
from cogbox.jail.oci import Bind, jail_env, render_oci_spec
from cogbox.jail.policy import Policy, load_policy, parse_policy
from cogbox.jail.reaper import reap_stale_jails
from tests.seed import CNTK_MINUS, CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root (runc, cgroups, mounts)"),
    pytest.mark.slow,
]

PY3 = "/usr/bin/python3"
PY2 = "/usr/bin/python2.7"


def policy_with(image: Image, **limits: object) -> Policy:
    """The image's own policy with some limits replaced."""
    document = yaml.safe_load(image.policy_path.read_text()) or {}
    document.setdefault("limits", {}).update(limits)
    if "pids" in limits:
        document.pop("max_child_procs", None)
    return parse_policy(yaml.safe_dump(document), source=f"test policy for {image.name}")


def run_python(image: Image, code: str, policy: Policy | None = None, **spec: object) -> JailResult:
    python = PY2 if (image.rootfs / "usr/bin/python2.7").exists() else PY3
    jail_spec = JailSpec(image, policy or load_policy(image.policy_path), [python, "-c", code])
    for key, value in spec.items():
        setattr(jail_spec, key, value)
    return run_jailed(jail_spec, timeout=120)


def out(result: JailResult) -> str:
    return result.stdout.decode()


# ---------------------------------------------------------------------------- the seed


def test_seed_hello_world_runs_in_the_cntk_jail(cntk_image: Image) -> None:
    result = run_python(cntk_image, HELLO_WORLD)
    assert (out(result), result.exit.reason) == ("hello world\n", ExitReason.EXITED)


def test_seed_cntk_squared_error_prints_29(cntk_image: Image) -> None:
    assert "[ 29.]" in out(run_python(cntk_image, CNTK_SQUARED_ERROR))


def test_seed_keras_uses_the_cntk_backend(cntk_image: Image) -> None:
    result = run_python(cntk_image, KERAS_BACKEND)
    assert out(result).strip().splitlines()[-1] == "keras"
    assert "Using CNTK backend" in result.stderr.decode()


def test_cntk_minus_evaluates_in_the_jail(cntk_image: Image) -> None:
    result = run_python(cntk_image, CNTK_MINUS)
    assert "[-3. -3. -3.]" in out(result)


# ---------------------------------------------------------------------------- the runtime


def test_rendered_oci_spec_runs_a_container_in_runc(python_image: Image, tmp_path: Path) -> None:
    policy = load_policy(python_image.policy_path)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    config = render_oci_spec(
        policy,
        rootfs=python_image.rootfs,
        args=[PY3, "-c", "print('from runc')"],
        env=jail_env(policy, python_image.env, {"PATH": "/usr/bin:/bin"}),
        binds=[Bind(home, "/home/work", readonly=False)],
        cgroups_path=f"/cogbox-test/{tmp_path.name}",
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    container = f"cogbox-test-{os.getpid()}-{tmp_path.name}"[:60]
    result = subprocess.run(
        ["runc", "--root", str(tmp_path / "state"), "run", "--bundle", str(tmp_path), container],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, b"from runc\n"), result.stderr


def test_code_runs_as_uid_1000_without_capabilities(python_image: Image) -> None:
    code = (
        "import os\nstatus = open('/proc/self/status').read()\n"
        "print(os.getuid(), os.getgid(), status.split('CapEff:')[1].split()[0])"
    )
    assert out(run_python(python_image, code)).split() == ["1000", "1000", "0000000000000000"]


def test_only_stdio_file_descriptors_reach_the_jail(python_image: Image) -> None:
    leaked = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(leaked, True)  # even an fd the host marked inheritable stays out
    try:
        code = (
            "import os\nopen_fds = []\nfor fd in range(3, 1024):\n"
            "    try:\n        os.fstat(fd)\n        open_fds.append(fd)\n"
            "    except OSError:\n        pass\nprint(open_fds)"
        )
        assert out(run_python(python_image, code)) == "[]\n"
    finally:
        os.close(leaked)


def test_root_filesystem_is_read_only(python_image: Image) -> None:
    code = "try:\n    open('/usr/evil', 'w')\nexcept OSError as e:\n    print(e.errno)"
    assert out(run_python(python_image, code)) == "30\n"  # EROFS


def test_environment_holds_only_preserved_keys_and_extra_envs(python_image: Image) -> None:
    os.environ["COGBOX_TEST_SECRET"] = "hunter2"
    try:
        policy = load_policy(python_image.policy_path)
        result = run_python(
            python_image,
            "import os, json\nprint(json.dumps(dict(os.environ)))",
            env={"LANG": "C.UTF-8", "NOT_PRESERVED": "x"},
        )
    finally:
        del os.environ["COGBOX_TEST_SECRET"]
    env = json.loads(out(result))
    assert set(env) <= {*policy.preserved_env_keys, *policy.extra_envs, "HOME"}
    assert "hunter2" not in out(result) and "NOT_PRESERVED" not in env
    assert env["OMP_NUM_THREADS"] == policy.extra_envs["OMP_NUM_THREADS"]


# ---------------------------------------------------------------------------- /home/work


def test_workdir_is_writable_and_persists_on_the_host(python_image: Image, tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("from the host")
    code = (
        "data = open('/home/work/input.txt').read()\n"
        "open('/home/work/output.txt', 'w').write(data.upper())"
    )
    result = run_python(python_image, code, workdir=tmp_path)
    assert result.exit.reason == ExitReason.EXITED, result.stderr
    assert (tmp_path / "output.txt").read_text() == "FROM THE HOST"


def test_workdir_without_quota_is_the_host_directory(python_image: Image, tmp_path: Path) -> None:
    policy = policy_with(python_image, workdir_quota="unlimited")
    run_python(python_image, "open('/home/work/f', 'w').write('x')", policy, workdir=tmp_path)
    assert (tmp_path / "f").read_text() == "x"


def test_files_deleted_in_the_jail_are_deleted_on_the_host(
    python_image: Image, tmp_path: Path
) -> None:
    (tmp_path / "old.txt").write_text("bye")
    run_python(python_image, "import os\nos.remove('/home/work/old.txt')", workdir=tmp_path)
    assert not (tmp_path / "old.txt").exists()


def test_symlink_written_in_the_jail_is_copied_back_as_a_link(
    python_image: Image, tmp_path: Path
) -> None:
    code = "import os\nos.symlink('/etc/shadow', '/home/work/link')"
    run_python(python_image, code, workdir=tmp_path)
    assert os.readlink(tmp_path / "link") == "/etc/shadow"


def test_disk_quota_stops_writes_to_home_work(python_image: Image, tmp_path: Path) -> None:
    policy = policy_with(python_image, workdir_quota="16m", file_size="1g")
    code = "open('/home/work/big', 'wb').write(b'x' * (64 << 20))"
    result = run_python(python_image, code, policy, workdir=tmp_path)
    assert result.exit.reason == ExitReason.DISK_QUOTA, result.stderr
    assert "disk quota of /home/work is full (16 MiB)" in result.exit.message


# ---------------------------------------------------------------------------- limits


def test_memory_limit_ends_in_an_oom_exit(python_image: Image) -> None:
    policy = policy_with(python_image, memory="64m")
    result = run_python(python_image, "x = bytearray(512 << 20)\nprint('survived')", policy)
    assert (result.exit.reason, result.exit.message) == (
        ExitReason.OOM,
        "killed: out of memory (memory limit 64 MiB)",
    )


def test_wall_time_limit_kills_a_sleeping_jail(python_image: Image) -> None:
    policy = policy_with(python_image, wall_time_seconds=1)
    result = run_python(python_image, "import time\ntime.sleep(60)", policy)
    assert result.exit.reason == ExitReason.WALL_TIME


def test_fork_bomb_is_stopped_by_pids_limit(python_image: Image) -> None:
    policy = policy_with(python_image, pids=8)
    code = "import os, time\nfor i in range(64):\n    if os.fork() == 0:\n        time.sleep(5)"
    result = run_python(python_image, code, policy)
    assert "BlockingIOError" in result.stderr.decode()
    assert result.exit.reason == ExitReason.PIDS_LIMIT


def test_cpu_time_limit_ends_a_busy_loop(python_image: Image) -> None:
    policy = policy_with(python_image, cpu_time_seconds=1)
    result = run_python(python_image, "while True:\n    pass", policy)
    assert result.exit.reason == ExitReason.CPU_TIME


def test_file_size_limit_stops_a_large_write(python_image: Image) -> None:
    policy = policy_with(python_image, file_size="1m")
    result = run_python(python_image, "open('/tmp/big', 'wb').write(b'x' * (4 << 20))", policy)
    assert result.exit.reason == ExitReason.FILE_SIZE


def test_output_flood_is_truncated_not_buffered_forever(python_image: Image) -> None:
    spec = JailSpec(
        python_image,
        load_policy(python_image.policy_path),
        [PY3, "-c", "import sys\nfor _ in range(64):\n    sys.stdout.write('x' * (1 << 20))"],
    )
    result = run_jailed(spec, timeout=60, output_limit=1 << 20)
    assert (len(result.stdout), result.truncated) == (1 << 20, True)


# ---------------------------------------------------------------------------- isolation


def test_two_jails_cannot_see_each_others_processes_or_files(python_image: Image) -> None:
    policy = load_policy(python_image.policy_path)
    code = (
        "import os, sys, time\nopen('/home/work/mine-' + sys.argv[1], 'w').write('x')\n"
        "open('/tmp/mine-' + sys.argv[1], 'w').write('x')\ntime.sleep(1.5)\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print(pids, sorted(os.listdir('/home/work')), sorted(os.listdir('/tmp')))"
    )
    results: dict[str, JailResult] = {}

    def run(name: str) -> None:
        spec = JailSpec(python_image, policy, [PY3, "-c", code, name])
        results[name] = run_jailed(spec, timeout=60)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each sees only its own init (pid 1) and its own command.
    assert re.fullmatch(r"\[1, \d+\] \['mine-a'\] \['mine-a'\]\n", out(results["a"])), results["a"]
    assert re.fullmatch(r"\[1, \d+\] \['mine-b'\] \['mine-b'\]\n", out(results["b"])), results["b"]


def test_jail_is_popen_like_with_pipes(python_image: Image) -> None:
    spec = JailSpec(
        python_image,
        load_policy(python_image.policy_path),
        [PY3, "-c", "import sys\nprint(sys.stdin.readline().upper(), end='')"],
    )
    with Jail() as jail:
        jail.start(spec, stdin=PIPE, stdout=PIPE)
        assert jail.poll() is None and jail.stdin is not None and jail.stdout is not None
        jail.stdin.write(b"ping\n")
        jail.stdin.flush()
        assert jail.stdout.readline() == b"PING\n"
        assert jail.wait(30).reason == ExitReason.EXITED


def test_killed_jail_reports_killed_and_leaves_nothing_behind(python_image: Image) -> None:
    spec = JailSpec(python_image, load_policy(python_image.policy_path), [PY3, "-c", "input()"])
    jail = Jail()
    jail.start(spec, stdin=PIPE)
    jail.kill()
    assert jail.wait(30).reason == ExitReason.KILLED
    jail.cleanup()
    assert jail.bundle is not None and not jail.bundle.exists()
    leftovers = list(Path("/sys/fs/cgroup").glob(f"*/cogbox/{jail.id}")) + list(
        Path("/sys/fs/cgroup").glob(f"cogbox/{jail.id}")
    )
    assert leftovers == []
    assert not (data_dir() / "run" / "runc" / jail.id).exists()


def test_missing_program_exits_127_naming_it(python_image: Image) -> None:
    # The init starts, then cannot exec the program: a shell's "command not found" status.
    spec = JailSpec(python_image, load_policy(python_image.policy_path), ["no-such-program"])
    result = run_jailed(spec)
    assert result.exit.returncode == 127
    assert b"exec no-such-program failed: No such file or directory" in result.stderr


def test_this_host_uses_cgroup_v1_controllers() -> None:
    # The development machine is hybrid: v1 controllers plus an empty cgroup2 mount.
    mounts = Path("/proc/self/mounts").read_text()
    expected = 2 if re.search(r" /sys/fs/cgroup cgroup2 ", mounts) else 1
    assert detect_version() == expected


# ---------------------------------------------------------------------------- the CLI


def cogbox(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "cogbox"), "jail", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_cli_streams_output_and_exits_with_the_commands_status(python_image: Image) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    result = cogbox("--image", python_image.name, "--", PY3, "-c", code)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_cli_names_the_limit_that_ended_the_command(python_image: Image, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text("limits: {memory: 64m}\n")
    command = [PY3, "-c", "x = bytearray(512 << 20)"]
    result = cogbox("--image", python_image.name, "--policy", str(policy_file), "--", *command)
    assert result.returncode == 137
    assert "cogbox: killed: out of memory (memory limit 64 MiB)" in result.stderr


# ---------------------------------------------------------------------------- the init


def test_command_runs_under_the_jails_init_not_as_pid_1(python_image: Image) -> None:
    code = "import os\nprint(os.getpid() != 1, open('/proc/1/cmdline').read().split('\\0')[0])"
    assert out(run_python(python_image, code)) == f"True {JAIL_INIT}\n"


def test_orphans_are_reaped_so_the_pids_limit_stays_free(python_image: Image) -> None:
    policy = policy_with(python_image, pids=8)
    code = (
        "import os, time\nfor _ in range(32):\n    pid = os.fork()\n    if pid == 0:\n"
        "        if os.fork() == 0:\n            os._exit(0)\n        os._exit(0)\n"
        "    os.waitpid(pid, 0)\ntime.sleep(0.3)\n"
        "pids = [os.fork() or os._exit(0) for _ in range(4)]\n"
        "print([os.waitpid(pid, 0)[1] for pid in pids])"
    )
    result = run_python(python_image, code, policy)
    assert out(result) == "[0, 0, 0, 0]\n", result.stderr


def test_cpu_time_limit_kills_with_sigxcpu_at_the_soft_limit(python_image: Image) -> None:
    policy = policy_with(python_image, cpu_time_seconds=1)
    result = run_python(python_image, "while True:\n    pass", policy)
    assert (result.exit.returncode, result.exit.reason) == (128 + 24, ExitReason.CPU_TIME)


def test_sigterm_from_the_caller_ends_a_python_command(python_image: Image) -> None:
    code = "print('ready', flush=True)\ninput()"
    spec = JailSpec(python_image, load_policy(python_image.policy_path), [PY3, "-c", code])
    with Jail() as jail:
        jail.start(spec, stdin=PIPE, stdout=PIPE)
        assert jail.stdout is not None and jail.stdout.readline() == b"ready\n"
        jail.send_signal(signal.SIGTERM)
        exit = jail.wait(30)
    assert (exit.returncode, exit.reason) == (128 + signal.SIGTERM, ExitReason.SIGNALED)


def test_without_forks_the_command_runs_as_pid_1(python_image: Image) -> None:
    document = yaml.safe_load(python_image.policy_path.read_text())
    policy = parse_policy(yaml.safe_dump({**document, "fork_allowance": 0}), source="no forks")
    assert out(run_python(python_image, "import os\nprint(os.getpid())", policy)) == "1\n"


def test_image_without_the_init_mount_point_is_refused_naming_the_rebuild(
    python_image: Image, tmp_path: Path
) -> None:
    (tmp_path / "rootfs").mkdir()
    old = Image(python_image.name, "0" * 64, tmp_path, True, {})
    spec = JailSpec(old, load_policy(python_image.policy_path), [PY3, "-c", "pass"])
    with pytest.raises(JailError, match=f"no {JAIL_INIT} .*cogbox image build python"):
        Jail().start(spec)


def test_init_runs_where_op_exec_makes_binds_noexec(python_image: Image) -> None:
    policy = parse_policy("whitelist_paths: {OP_EXEC: []}\n", source="image programs only")
    assert not policy.exec_allowed_at(JAIL_INIT)
    assert out(run_python(python_image, "print('ran')", policy)) == "ran\n"


def test_op_exec_denied_makes_tmp_and_home_work_noexec(python_image: Image) -> None:
    policy = parse_policy("whitelist_paths: {OP_EXEC: []}\n", source="image programs only")
    code = (
        "import os, shutil, subprocess\n"
        "print(subprocess.call(['/bin/true']))\n"  # the image's own programs still run
        "for folder in ('/tmp', '/home/work'):\n"
        "    shutil.copy('/bin/true', folder + '/mytrue')\n"
        "    try:\n"
        "        subprocess.call([folder + '/mytrue'])\n"
        "    except PermissionError as exc:\n"
        "        print(folder, exc.errno)\n"
    )
    assert out(run_python(python_image, code, policy)) == "0\n/tmp 13\n/home/work 13\n"


def test_readonly_bind_is_readable_and_refuses_writes(python_image: Image, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.txt").write_text("from the host")
    document = f"mounts: {{readonly_binds: [{{source: {shared}, destination: /opt/data}}]}}\n"
    policy = parse_policy(document, source="with a read-only bind")
    code = (
        "print(open('/opt/data/data.txt').read())\n"
        "try:\n"
        "    open('/opt/data/new.txt', 'w')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    assert out(run_python(python_image, code, policy)) == "from the host\n30\n"
    assert sorted(p.name for p in shared.iterdir()) == ["data.txt"]


def test_cpus_quota_throttles_a_busy_loop(python_image: Image) -> None:
    # A loop that would use a whole core for 1.5 s gets about a quarter of it.
    code = (
        "import time\n"
        "wall, cpu = time.monotonic(), time.process_time()\n"
        "while time.monotonic() - wall < 1.5: pass\n"
        "print(round((time.process_time() - cpu) / (time.monotonic() - wall), 2))\n"
    )
    share = float(out(run_python(python_image, code, policy_with(python_image, cpus=0.25))))
    assert share < 0.5


BUSY_LOOP = """
import os, sys, time
os.sched_setaffinity(0, {%d})
while time.time() < %r:
    time.sleep(0.005)
began = time.process_time()
while time.time() < %r:
    pass
print(time.process_time() - began)
"""


def test_jailed_busy_loops_get_the_share_of_the_same_loops_outside(python_image: Image) -> None:
    # Two loops in jails and two on the host, all on one core for 3 s. The host's are each in
    # its own session, as Jupyter starts plain kernels, so each is its own scheduling group
    # (autogroup) of the default weight: a quarter of the core each, as plain processes.
    # Jails under one shared cgroup of the default weight got a sixth each (all jails
    # together weighed one process) against a third for each host loop.
    cpu = max(os.sched_getaffinity(0))
    start = time.time() + 2.0
    code = BUSY_LOOP % (cpu, start, start + 3.0)
    jailed: list[float] = []

    def jail_loop() -> None:
        jailed.append(float(out(run_python(python_image, code, policy_with(python_image, cpus=1)))))

    threads = [threading.Thread(target=jail_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    host = [
        subprocess.Popen([sys.executable, "-c", code], stdout=PIPE, start_new_session=True)
        for _ in range(2)
    ]
    outside = [float(process.communicate(timeout=60)[0]) for process in host]
    for thread in threads:
        thread.join(60)
    assert len(jailed) == 2, "a jailed loop did not report"
    assert min(jailed) >= 0.75 * max(outside), (jailed, outside)


def test_the_shared_cgroup_weighs_what_its_jails_weigh(python_image: Image) -> None:
    version = detect_version()
    file, one = ("cpu.weight", 100) if version == 2 else ("cpu.shares", 1024)
    shared = Path("/sys/fs/cgroup") / ("cogbox" if version == 2 else "cpu/cogbox")
    policy = policy_with(python_image, cpus=2)
    spec = JailSpec(python_image, policy, [PY3, "-c", "input()"])

    def total() -> int:
        return sum(int((d / file).read_text()) for d in shared.iterdir() if d.is_dir())

    with Jail() as jail:
        jail.start(spec, stdin=PIPE)
        assert int((shared / jail.id / file).read_text()) == 2 * one
        assert int((shared / file).read_text()) == min(total(), 262144 if version == 1 else 10000)
        jail.kill()
        jail.wait(30)
    assert not (shared / jail.id).exists()
    assert int((shared / file).read_text()) == max(one, total())


# ---------------------------------------------------------------------------- lifetime

DRIVER = """
import sys, threading, time
from pathlib import Path
from cogbox.images.store import ImageStore
from cogbox.jail.launcher import DEVNULL, Jail, JailSpec
from cogbox.jail.policy import load_policy
name, digest, marker, workdir = sys.argv[1:5]
image = ImageStore().find(name, digest)
jail = Jail()
code = "import time\\nopen('/home/work/written', 'w').write('by the jail')\\ntime.sleep(600)"
spec = JailSpec(image, load_policy(image.policy_path), ["python3", "-c", code, marker],
                workdir=Path(workdir))
# Started from a thread that ends at once: the jail must outlive it, not die with it.
starter = threading.Thread(target=jail.start, args=(spec,), kwargs={"stdout": DEVNULL})
starter.start()
starter.join()
while not (jail.workdir_view / "written").exists():
    time.sleep(0.01)
print(jail.id, flush=True)
time.sleep(600)
"""


def jail_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def start_driver(image: Image, marker: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, image.name, image.digest, marker, str(workdir)],
        stdout=PIPE,
        text=True,
    )
    assert driver.stdout is not None
    return driver, driver.stdout.readline().strip()


def test_jail_dies_with_the_process_driving_it(python_image: Image, tmp_path: Path) -> None:
    marker = f"cogbox-driver-test-{uuid.uuid4().hex}"
    driver, _ = start_driver(python_image, marker, tmp_path)
    try:
        time.sleep(1)  # the thread that started it has ended by now
        assert len(jail_processes(marker)) >= 3, "driver, init and command should be running"
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 5
    while jail_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jail_processes(marker) == []
    reap_stale_jails()


def test_stale_jail_is_reaped_and_its_workdir_saved(python_image: Image, tmp_path: Path) -> None:
    marker = f"cogbox-driver-test-{uuid.uuid4().hex}"
    driver, jail_id = start_driver(python_image, marker, tmp_path)
    driver.kill()
    driver.wait()
    bundle = data_dir() / "run" / "jails" / jail_id
    assert bundle.exists()
    assert jail_id in reap_stale_jails()
    cgroups = list(Path("/sys/fs/cgroup").glob(f"*/cogbox/{jail_id}"))
    runc_state = data_dir() / "run" / "runc" / jail_id
    assert (bundle.exists(), runc_state.exists(), cgroups) == (False, False, [])
    assert (tmp_path / "written").read_text() == "by the jail"


def test_live_jails_are_not_reaped(python_image: Image) -> None:
    spec = JailSpec(python_image, load_policy(python_image.policy_path), [PY3, "-c", "input()"])
    with Jail() as jail:
        jail.start(spec, stdin=PIPE)
        assert jail.id not in reap_stale_jails()
        assert jail.poll() is None


def flock_holders(path: Path) -> set[int]:
    """Processes holding an flock on `path`, from /proc/locks (blocked waiters left out)."""
    inode = str(path.stat().st_ino)
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # 1: FLOCK  ADVISORY  READ  1234 fd:01:5678 0 EOF
        if fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == inode:
            holders.add(int(fields[4]))
    return holders


def test_running_jail_holds_its_image_so_a_rebuild_keeps_it(python_image: Image) -> None:
    # ImageStore.prune deletes only versions nobody holds (Image.hold, a shared flock).
    manifest = python_image.path / "manifest.json"
    spec = JailSpec(python_image, load_policy(python_image.policy_path), [PY3, "-c", "input()"])
    with Jail() as jail:
        jail.start(spec, stdin=PIPE)
        held_while_running = os.getpid() in flock_holders(manifest)
    assert (held_while_running, os.getpid() in flock_holders(manifest)) == (True, False)


def test_cli_gc_removes_stale_jails_and_says_how_many() -> None:
    command = [str(Path(sys.executable).parent / "cogbox"), "jail", "gc"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.endswith("stale jail(s) removed\n")
