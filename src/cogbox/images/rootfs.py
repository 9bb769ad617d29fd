"""Run a command inside a root filesystem with bubblewrap (build steps, image inspection).

This is a build-time tool, not the jail: it runs as root with the host's network so apt can
reach Debian's registry. Users' code runs through cogbox.jail instead.
"""

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def bwrap_argv(
    rootfs: Path,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    *,
    readonly: bool = False,
) -> list[str]:
    """The bwrap command line that runs `argv` with `rootfs` as / and a clean environment.

    `readonly`: inspect a built image without changing it (a program run as root would
    otherwise leave files behind, e.g. Keras's ~/.keras/keras.json, and every later export
    of the image would carry them); /tmp is then a fresh tmpfs."""
    cmd = [
        "bwrap",
        "--ro-bind" if readonly else "--bind",
        str(rootfs),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/run",
        *(["--tmpfs", "/tmp"] if readonly else []),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--clearenv",
    ]
    resolv = Path("/etc/resolv.conf")
    if resolv.exists():
        cmd += ["--ro-bind", str(resolv.resolve()), "/etc/resolv.conf"]
    for key, value in {**BASE_ENV, **(env or {})}.items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--chdir", cwd, *argv]


def run_in_rootfs(
    rootfs: Path,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str = "/",
    input: str | None = None,
    timeout: float | None = None,
    readonly: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside `rootfs`; returns the completed process with text stdout/stderr."""
    return subprocess.run(
        bwrap_argv(rootfs, argv, env, cwd, readonly=readonly),
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        check=False,
    )
