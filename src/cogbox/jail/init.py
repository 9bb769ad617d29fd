"""The jail's PID 1: Debian's tini, bound from the host, and what it needs to start.

The kernel drops default-action signals (SIGXCPU, SIGXFSZ, SIGTERM) sent to a PID
namespace's init, and only init reaps orphans; tini forwards signals to the command's
process group and exits with its status. Policies with `fork_allowance: 0` run the command
as PID 1 (tini could not fork it).
"""

import os
import stat
from pathlib import Path

from cogbox.images.paths import JAIL_INIT
from cogbox.images.store import Image
from cogbox.jail.errors import JailError
from cogbox.jail.policy import Policy

# Debian's tini, statically linked so it runs in any image (Python 2.7 on Debian 11 too).
HOST_INIT = Path("/usr/bin/tini-static")
# -g: signals go to the command's process group (an interrupt reaches its children too);
# -p: SIGKILL when runc, its parent, dies, so an orphaned jail cannot keep running.
INIT_ARGS = ("-g", "-p", "SIGKILL", "--")
# What tini itself calls; a policy whose own syscall list lacks one would fail to start.
INIT_SYSCALLS = frozenset(
    {"clone", "execve", "wait4", "rt_sigtimedwait", "rt_sigprocmask", "prctl", "setpgid", "kill"}
)


def under_init(argv: list[str]) -> list[str]:
    """`argv` as the jail's init runs it."""
    return [JAIL_INIT, *INIT_ARGS, *argv]


def check_init(image: Image, policy: Policy) -> None:
    """JailError unless the host's init, the image's mount point and the policy allow it."""
    if not os.access(HOST_INIT, os.X_OK):
        raise JailError(
            f"the jail's init {HOST_INIT} is missing: install Debian's tini "
            "(apt-get install tini, or run scripts/setup)"
        )
    try:
        # lstat: a link in the image must not redirect where the init is bound.
        is_file = stat.S_ISREG(os.lstat(image.rootfs / JAIL_INIT.lstrip("/")).st_mode)
    except OSError:
        is_file = False
    if not is_file:
        raise JailError(
            f"image {image.name!r} ({image.digest[:12]}) has no {JAIL_INIT} for the jail's "
            f"init: it was built by an older cogbox; rebuild it with "
            f"`cogbox image build {image.name}`"
        )
    missing = sorted(INIT_SYSCALLS - set(policy.allowed_syscalls))
    if missing:
        raise JailError(
            f"the policy's allowed_syscalls lacks {', '.join(missing)}, which the jail's "
            "init (tini) needs; add them, or use diff_to_default: true"
        )
