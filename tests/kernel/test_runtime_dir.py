"""A kernel's runtime folder on the host: its tmpfs, its connection file, its dial links."""

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.jail.policy import JAIL_UID
from cogbox.kernel.connection import RuntimeDir, reap_stale_runtimes
from cogbox.kernel.errors import KernelError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[RuntimeDir]:
    made = RuntimeDir.create(tmp_path / "k", owner=os.getuid(), group=os.getgid())
    try:
        yield made
    finally:
        made.remove()


def test_the_jails_folder_is_a_small_tmpfs_of_the_jails_user(tmp_path: Path) -> None:
    made = RuntimeDir.create(tmp_path / "k")
    try:
        assert os.path.ismount(made.path)
        stats = os.statvfs(made.path)
        assert stats.f_blocks * stats.f_frsize <= 4 << 20
        info = made.path.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (JAIL_UID, 0o700)
        assert (made.host_dir.stat().st_mode & 0o777, made.host_dir.stat().st_uid) == (0o700, 0)
    finally:
        made.remove()
    assert not made.host_dir.exists()


def test_reset_empties_what_the_jail_planted_and_writes_the_connection_file(
    runtime: RuntimeDir, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host")
    (runtime.path / "kernel.json").symlink_to(outside)
    (runtime.path / "k-1").mkdir()
    os.mkfifo(runtime.path / "k-2")
    runtime.reset()
    assert os.listdir(runtime.path) == ["kernel.json"] and outside.read_text() == "host"
    info = json.loads((runtime.path / "kernel.json").read_text())
    assert (info["ip"], info["key"]) == ("/run/cogbox/k", runtime.key)


def test_proven_sockets_are_dialled_through_host_only_links(runtime: RuntimeDir) -> None:
    servers = []
    for port in range(1, 6):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(runtime.path / f"k-{port}"))
        server.listen(1)
        servers.append(server)
    try:
        assert runtime.prove_sockets()
        link = runtime.dial / "k-1"
        assert os.readlink(link).startswith("/proc/self/fd/")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(link))
    finally:
        for server in servers:
            server.close()


def test_a_socket_replaced_by_a_link_is_refused(runtime: RuntimeDir, tmp_path: Path) -> None:
    (runtime.path / "k-1").symlink_to(tmp_path / "elsewhere.sock")
    with pytest.raises(KernelError, match="k-1 was replaced"):
        runtime.prove_sockets()
    assert not (runtime.dial / "k-1").exists()


def test_the_reaper_leaves_a_live_folder_alone(runtime: RuntimeDir, tmp_path: Path) -> None:
    assert reap_stale_runtimes(tmp_path / "k") == []
    assert os.path.ismount(runtime.path)
