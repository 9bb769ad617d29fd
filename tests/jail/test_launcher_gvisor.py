"""gVisor (`runsc`) as the stronger boundary: the same jail, with a user-space kernel."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason, Jail, JailError, JailSpec, run_jailed
from cogbox.jail.policy import load_policy, parse_policy

pytestmark = pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed")


def _run(image: Image, code: str, memory: int | None = None) -> tuple[str, ExitReason, str]:
    policy = load_policy(image.policy_path)
    if memory is not None:
        limits = policy.limits.model_copy(update={"memory_bytes": memory})
        policy = policy.model_copy(update={"limits": limits})
    result = run_jailed(
        JailSpec(image, policy, ["python", "-c", code]), runtime="runsc", timeout=60
    )
    return result.stdout.decode(), result.exit.reason, result.exit.message


def test_code_runs_on_gvisors_kernel_as_uid_1000(python_image: Image) -> None:
    out, reason, _ = _run(python_image, "import os; print(os.uname().release, os.getuid())")
    # gVisor's Sentry reports its own kernel version, not the host's.
    assert (out, reason) == ("4.4.0 1000\n", ExitReason.EXITED)


def test_policy_seccomp_applies_inside_gvisor(python_image: Image) -> None:
    # gVisor itself would allow both (unshare succeeds; io_uring_setup gets EFAULT): the
    # EPERM is the policy's whitelist, loaded into gVisor's kernel with --oci-seccomp.
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "for nr, args in ((272, (0x20000,)), (425, (1, 0))):\n"
        "    print(libc.syscall(nr, *args), os.strerror(ctypes.get_errno()))"
    )
    out, _, _ = _run(python_image, code)
    assert out == "-1 Operation not permitted\n" * 2


def test_memory_limit_is_reported_as_oom_under_gvisor(python_image: Image) -> None:
    _, reason, message = _run(python_image, "x = bytearray(1 << 30)", memory=128 << 20)
    assert reason == ExitReason.OOM and "memory limit 128 MiB" in message


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder whose parents every host id can traverse (unlike pytest's 0700 tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="cogbox-gvisor-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_files_written_under_gvisor_belong_to_the_jails_host_identity(
    python_image: Image, open_dir: Path
) -> None:
    # gVisor's gofer writes /home/work as the jail's namespace ids: on the host, the file is
    # the identity's host_uid (the Sentry's own processes run as 65534; see docs/jail.md).
    workdir = open_dir / "work"
    workdir.mkdir()
    policy = parse_policy("limits: {workdir_quota: unlimited}\n", source="gvisor ownership")
    code = "open('/home/work/made.txt', 'w').write('x')"
    jail = Jail(runtime="runsc")
    try:
        jail.start(JailSpec(python_image, policy, ["python", "-c", code], workdir=workdir))
        assert jail.wait(60).reason == ExitReason.EXITED
        identity = jail.identity
    finally:
        jail.cleanup()

    assert identity is not None
    assert (workdir / "made.txt").stat().st_uid == identity.host_uid != 1000


def test_a_bind_source_the_namespace_root_cannot_reach_is_refused_naming_it(
    python_image: Image, tmp_path: Path
) -> None:
    hidden = tmp_path / "private"
    (hidden / "work").mkdir(parents=True)
    hidden.chmod(0o700)
    policy = parse_policy("limits: {workdir_quota: unlimited}\n", source="gvisor reach")

    with pytest.raises(JailError, match=r"needs its host folder's parents to be traversable"):
        run_jailed(
            JailSpec(python_image, policy, ["true"], workdir=hidden / "work"), runtime="runsc"
        )
