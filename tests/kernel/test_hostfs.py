"""The proven-path helpers (cogbox.hostfs) against what a jail could plant in its folders."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox import hostfs


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "jail-writable"
    path.mkdir()
    with hostfs.open_dir(path) as fd:
        yield path, fd


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside.txt"
    path.write_text("host file")
    return path


def test_open_dir_refuses_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError), hostfs.open_dir(tmp_path / "link"):
        pass


def test_write_new_file_replaces_a_planted_link_instead_of_writing_through_it(
    folder: tuple[Path, int], outside: Path
) -> None:
    path, fd = folder
    (path / "kernel.json").symlink_to(outside)
    hostfs.write_new_file(fd, "kernel.json", b"{}")
    assert outside.read_text() == "host file"
    assert not (path / "kernel.json").is_symlink() and (path / "kernel.json").read_bytes() == b"{}"


def test_write_new_file_replaces_a_planted_folder_and_fifo(folder: tuple[Path, int]) -> None:
    path, fd = folder
    (path / "a").mkdir()
    (path / "a" / "inner").write_text("x")
    os.mkfifo(path / "b")
    hostfs.write_new_file(fd, "a", b"1")
    hostfs.write_new_file(fd, "b", b"2")
    assert ((path / "a").read_bytes(), (path / "b").read_bytes()) == (b"1", b"2")


def test_write_new_file_does_not_write_through_a_hard_link(
    folder: tuple[Path, int], tmp_path: Path
) -> None:
    path, fd = folder
    other = path / "other"
    other.write_text("mine")
    os.link(other, path / "kernel.json")
    hostfs.write_new_file(fd, "kernel.json", b"{}")
    assert other.read_text() == "mine"


def test_clear_dir_removes_links_without_following_them(
    folder: tuple[Path, int], outside: Path, tmp_path: Path
) -> None:
    path, fd = folder
    (path / "to-file").symlink_to(outside)
    (path / "to-dir").symlink_to(tmp_path)
    (path / "deep").mkdir()
    (path / "deep" / "to-dir").symlink_to(tmp_path)
    os.mkfifo(path / "fifo")
    hostfs.clear_dir(fd)
    assert os.listdir(path) == [] and outside.read_text() == "host file"


def _listening(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    return server


def test_open_socket_proves_a_socket_and_dials_that_inode(folder: tuple[Path, int]) -> None:
    path, fd = folder
    server = _listening(path / "k-1")
    proven = hostfs.open_socket(fd, "k-1", owner=os.getuid(), device=os.fstat(fd).st_dev)
    try:
        (path / "k-1").unlink()  # swapped after the proof: the fd still leads to it
        (path / "k-1").symlink_to("/nonexistent")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(hostfs.fd_path(proven))
            peer, _ = server.accept()
            peer.close()
    finally:
        os.close(proven)
        server.close()


@pytest.mark.parametrize("kind", ["link", "fifo", "file", "folder"])
def test_open_socket_refuses_anything_but_a_socket(
    folder: tuple[Path, int], tmp_path: Path, kind: str
) -> None:
    path, fd = folder
    target = tmp_path / "host.sock"
    server = _listening(target)
    try:
        entry = path / "k-1"
        if kind == "link":
            entry.symlink_to(target)
        elif kind == "fifo":
            os.mkfifo(entry)
        elif kind == "file":
            entry.write_text("")
        else:
            entry.mkdir()
        with pytest.raises(hostfs.HostPathError):
            hostfs.open_socket(fd, "k-1", owner=os.getuid(), device=os.fstat(fd).st_dev)
    finally:
        server.close()


def test_open_socket_refuses_another_owners_or_another_filesystems_socket(
    folder: tuple[Path, int],
) -> None:
    path, fd = folder
    server = _listening(path / "k-1")
    try:
        device = os.fstat(fd).st_dev
        with pytest.raises(hostfs.HostPathError, match="owned by uid"):
            hostfs.open_socket(fd, "k-1", owner=os.getuid() + 4242, device=device)
        with pytest.raises(hostfs.HostPathError, match="another filesystem"):
            hostfs.open_socket(fd, "k-1", owner=os.getuid(), device=device + 1)
    finally:
        server.close()
