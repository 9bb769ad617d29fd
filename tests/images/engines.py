"""Private container engines for the export tests: podman/buildah, dockerd, containerd and a
registry, each with its own state folder and socket, started on demand and stopped after.

Nothing here touches a system-wide engine: every command names its own root, socket or port,
so the tests run beside (or without) any daemon the machine has.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]

# Debian package of each command, so a missing one says what to install.
PACKAGES = {
    "podman": "podman",
    "buildah": "buildah",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "ctr": "containerd",
    "docker-registry": "docker-registry",
}


def require(*commands: str) -> None:
    for command in commands:
        if shutil.which(command) is None:
            pytest.skip(f"{command} is not installed (Debian package {PACKAGES[command]})")


def _runner(prefix: Sequence[str]) -> Run:
    def run(
        *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join([*prefix, *args])[:300]} exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    return run


def containers_storage(state: Path) -> list[str]:
    """The global flags that point podman and buildah at one private containers-storage."""
    return [
        "--root",
        str(state / "root"),
        "--runroot",
        str(state / "run"),
        "--storage-driver",
        "overlay",
    ]


def podman_argv(state: Path) -> list[str]:
    return [
        "podman",
        *containers_storage(state),
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--tmpdir",
        str(state / "tmp"),
    ]


def podman(state: Path) -> Run:
    return _runner(podman_argv(state))


def buildah(state: Path) -> Run:
    return _runner(["buildah", *containers_storage(state)])


def reset_containers_storage(state: Path) -> None:
    podman(state)("system", "reset", "--force", check=False, timeout=120)
    _unmount_under(state)
    shutil.rmtree(state, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(
    argv: Sequence[str], log: Path, ready: Callable[[], bool], timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (in its own process group), wait until `ready()`, stop it after."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _connects(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def dockerd(state: Path) -> Iterator[Run]:
    """A private dockerd (cgroupfs driver, no bridge, no iptables); yields a `docker` runner."""
    sock = state / "docker.sock"
    argv = [
        "dockerd",
        "--data-root",
        str(state / "data"),
        "--exec-root",
        str(state / "exec"),
        "--pidfile",
        str(state / "dockerd.pid"),
        "--host",
        f"unix://{sock}",
        "--exec-opt",
        "native.cgroupdriver=cgroupfs",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
    ]
    state.mkdir(parents=True, exist_ok=True)
    docker = _runner(["docker", "--host", f"unix://{sock}"])

    def ready() -> bool:
        return _connects(sock) and docker("info", check=False, timeout=10).returncode == 0

    try:
        with daemon(argv, state / "dockerd.log", ready):
            yield docker
    finally:
        _unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def containerd(state: Path) -> Iterator[Run]:
    """A private containerd (own root, state and socket); yields a `ctr` runner."""
    sock = state / "containerd.sock"
    state.mkdir(parents=True, exist_ok=True)
    config = state / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{state / "root"}"\n'
        f'state = "{state / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    argv = ["containerd", "--config", str(config)]
    try:
        with daemon(argv, state / "containerd.log", lambda: _connects(sock)):
            yield _runner(["ctr", "--address", str(sock), "--namespace", "cogbox-tests"])
    finally:
        _unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def registry(state: Path) -> Iterator[str]:
    """A docker-registry on loopback only; yields its address, 127.0.0.1:PORT."""
    port = free_port()
    state.mkdir(parents=True, exist_ok=True)
    config = state / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {state / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    try:
        argv = ["docker-registry", "serve", str(config)]
        with daemon(argv, state / "registry.log", lambda: _listens(port)):
            yield f"127.0.0.1:{port}"
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _unmount_under(state: Path) -> None:
    """Lazily unmount whatever an engine left mounted under `state` (deepest first)."""
    prefix = str(state.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
