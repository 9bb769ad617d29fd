"""gVisor (`runsc`) as the stronger boundary: the same jail, with a user-space kernel."""

import shutil

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason, JailSpec, run_jailed
from cogbox.jail.policy import load_policy

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
